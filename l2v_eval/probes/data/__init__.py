"""A small hand-annotated sample for the word-level probes (a package so its files ship).

``train.txt`` (60 sentences, 531 words), ``dev.txt`` (20, 162) and ``test.txt``
(20, 172) are short English sentences stating common facts, written and tagged
by hand for this project in CoNLL-2003 layout: ``token POS chunk NER`` per line,
``-DOCSTART-`` lines between documents, a blank line after each sentence.

- POS: Penn Treebank tags.
- Chunks: CoNLL-2000 conventions (base NP, VP verb groups including auxiliaries,
  pre-verbal adverbs and infinitival ``to``; PP holds the preposition only),
  IOB2. Coordinated bare nouns or adjectives form one chunk (``food and
  medicine``); coordinated names form separate chunks around an ``O`` conjunction.
- NER: PER, LOC, ORG, MISC as in CoNLL-2003 (nationalities, languages, events,
  works and products are MISC; a leading ``the`` stays outside the entity unless
  it is part of a title), IOB2.

It is a sample for tests and a quick offline run, not CoNLL-2003 (whose Reuters
text cannot be redistributed): scores on it are noisy and not comparable with
published CoNLL-2003 numbers. Point ``--probe-data`` at the real files for that.
"""
