"""Embedding cache for evaluations: a text is encoded once per model and encoder settings.

Vectors go to disk in chunks as they are computed, so a run killed in the middle of an
8.8M-passage corpus resumes at its last finished chunk, a re-run encodes nothing, and
tasks that share a corpus (under the same instruction) encode it once.

Layout::

    <cache>/l2v-cache.json                                marks the folder as l2v's (see l2v_eval.cache_folder)
    <cache>/CACHEDIR.TAG                                  backup tools skip it (only in a folder l2v created)
    <cache>/<org__model>/<settings>/settings.json         model, revision, kind, pooling, max length, dtype, adapters,
                                                          attention direction
    <cache>/<org__model>/<settings>/<instruction>/instruction.txt
    <cache>/<org__model>/<settings>/<instruction>/<writer>-<seq>.emb

``<settings>`` and ``<instruction>`` are digests of what they name, both as the encoder
adapter (:class:`l2v_eval.encoder_adapter.L2VEncoder`) states them. Inside an instruction
folder a text is keyed by the sha256 of its text, so a retrieval corpus (documents get no
instruction) is shared by every task and instruction mode.

The rooms: :mod:`.chunks` is the file format of one ``.emb`` file, :mod:`.store` one folder
of them (:class:`~.store.ChunkStore`), :mod:`.encoder` the mteb encoder that reads and
writes through the stores (:class:`~.encoder.CachedEncoder`).
"""
