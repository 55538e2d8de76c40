"""The reference llm2vec's README snippets and examples/*.py run unchanged but for the import line
(``from l2v_core import LLM2Vec``), on tiny models published under the released ids in a local
Hub cache, with small local data in place of their datasets; and encode takes exactly the inputs
the reference's encode takes."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from huggingface_hub import constants

from l2v_core import LLM2Vec
from tests import hubcache, tiny

LLAMA3 = "meta-llama/Meta-Llama-3-8B-Instruct"
LLAMA3_MNTP = "McGill-NLP/LLM2Vec-Meta-Llama-3-8B-Instruct-mntp"
LLAMA3_SIMCSE = "McGill-NLP/LLM2Vec-Meta-Llama-3-8B-Instruct-mntp-unsup-simcse"
LLAMA3_SUPERVISED = "McGill-NLP/LLM2Vec-Meta-Llama-3-8B-Instruct-mntp-supervised"


@pytest.fixture(scope="module")
def released(tmp_path_factory):
    """The released ids, as tiny models, in the default Hub cache (offline, as the session is)."""
    home = tmp_path_factory.mktemp("hf-home")
    hubcache.reference_repos(home / "hub", home / "work")
    hubcache.reference_repos(home / "hub", home / "work", LLAMA3, LLAMA3_MNTP, (LLAMA3_SIMCSE, LLAMA3_SUPERVISED),
                             arch="llama")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(constants, "HF_HUB_CACHE", str(home / "hub"))
        patch.setattr(constants, "HF_HUB_OFFLINE", True)
        yield


@pytest.fixture(scope="module")
def model(released):
    # examples/{sts,classification,clustering,retrieval}.py, verbatim
    model = LLM2Vec.from_pretrained(
        "McGill-NLP/LLM2Vec-Mistral-7B-Instruct-v2-mntp",
        peft_model_name_or_path="McGill-NLP/LLM2Vec-Mistral-7B-Instruct-v2-mntp-supervised",
        device_map="cuda" if torch.cuda.is_available() else "cpu",
        torch_dtype=torch.bfloat16,
    )
    return model


def append_instruction(instruction, sentences):
    # copied from the examples
    new_sentences = []
    for s in sentences:
        new_sentences.append([instruction, s, 0])
    return new_sentences


def test_sts_example(model):
    from scipy.stats import spearmanr
    from sklearn.metrics.pairwise import paired_cosine_distances

    instruction = "Retrieve semantically similar text: "
    sentences1, sentences2 = tiny.CORPUS[:6], tiny.CORPUS[6:]
    dataset = {"test": {"score": [0.5, 4.0, 2.5, 3.0, 1.0, 5.0]}}
    min_score, max_score = 0, 5
    normalize = lambda x: (x - min_score) / (max_score - min_score)  # noqa: E731
    normalized_scores = list(map(normalize, dataset["test"]["score"]))
    batch_size = 8

    sentences1 = append_instruction(instruction, sentences1)
    embeddings1 = np.asarray(model.encode(sentences1, batch_size=batch_size))
    sentences2 = append_instruction(instruction, sentences2)
    embeddings2 = np.asarray(model.encode(sentences2, batch_size=batch_size))
    cosine_scores = 1 - (paired_cosine_distances(embeddings1, embeddings2))
    cosine_spearman, _ = spearmanr(normalized_scores, cosine_scores)

    assert embeddings1.shape == (6, 32) and embeddings1.dtype == np.float32
    assert -1 <= cosine_spearman <= 1
    # The [instruction, text, 0] triples are [instruction, text] pairs to the encoder.
    pairs = model.encode([[instruction, s] for s in tiny.CORPUS[:6]], batch_size=batch_size)
    np.testing.assert_allclose(embeddings1, pairs.numpy(), rtol=1e-5, atol=1e-6)


def test_classification_example(model):
    from sklearn.linear_model import LogisticRegression

    instruction = "Classify a given Amazon customer review text as either counterfactual or notcounterfactual: "
    texts = tiny.CORPUS * 2
    labels = [i % 2 for i in range(len(texts))]
    sentences_train, y_train = texts[:16], labels[:16]
    sentences_test = texts[16:]
    batch_size = 8
    clf = LogisticRegression(random_state=42, n_jobs=1, max_iter=100, verbose=0)

    sentences_train = append_instruction(instruction, sentences_train)
    X_train = np.asarray(model.encode(sentences_train, batch_size=batch_size))
    sentences_test = append_instruction(instruction, sentences_test)
    X_test = np.asarray(model.encode(sentences_test, batch_size=batch_size))
    clf.fit(X_train, y_train)
    y_pred = clf.predict(X_test)
    assert X_train.shape == (16, 32) and len(y_pred) == len(texts) - 16


def test_clustering_example(model):
    import sklearn.cluster
    import sklearn.metrics

    instruction = "Identify the topic or theme of the given news articles: "
    dataset = {"test": [{"sentences": tiny.CORPUS, "labels": [i % 3 for i in range(len(tiny.CORPUS))]}]}
    batch_size = 32
    v_measures = []
    for cluster_set in dataset["test"]:
        sentences = cluster_set["sentences"]
        labels = cluster_set["labels"]
        new_sentences = append_instruction(instruction, sentences)
        corpus_embeddings = np.asarray(model.encode(new_sentences, batch_size=batch_size))
        clustering_model = sklearn.cluster.MiniBatchKMeans(n_clusters=len(set(labels)), batch_size=500, n_init=3,
                                                           random_state=0)
        clustering_model.fit(corpus_embeddings)
        v_measures.append(sklearn.metrics.cluster.v_measure_score(labels, clustering_model.labels_))
    assert 0 <= np.mean(v_measures) <= 1


def test_retrieval_example(model):
    instruction = "Given a claim, find documents that refute the claim: "
    corpus = {f"d{i}": {"title": "", "text": t} for i, t in enumerate(tiny.CORPUS)}
    queries = {"q0": "Which city is the capital of France?", "q1": "Who is playing music outside?"}
    batch_size = 8

    def cos_sim(a: torch.Tensor, b: torch.Tensor):
        a_norm = torch.nn.functional.normalize(a, p=2, dim=1)
        b_norm = torch.nn.functional.normalize(b, p=2, dim=1)
        return torch.mm(a_norm, b_norm.transpose(0, 1))

    def encode_queries(queries, batch_size: int, **kwargs):
        new_sentences = append_instruction(instruction, queries)
        kwargs["show_progress_bar"] = False
        return model.encode(new_sentences, batch_size=batch_size, **kwargs)

    def encode_corpus(corpus, batch_size: int, **kwargs):
        sentences = [(doc["title"] + " " + doc["text"]).strip() if "title" in doc else doc["text"].strip()
                     for doc in corpus]
        new_sentences = append_instruction("", sentences)
        return model.encode(new_sentences, batch_size=batch_size, **kwargs)

    queries = [queries[qid] for qid in queries]
    query_embeddings = encode_queries(queries, batch_size=batch_size, show_progress_bar=True, convert_to_tensor=True)
    corpus_ids = sorted(corpus, key=lambda k: len(corpus[k].get("title", "") + corpus[k].get("text", "")), reverse=True)
    corpus = [corpus[cid] for cid in corpus_ids]
    corpus_embeddings = encode_corpus(corpus, batch_size=batch_size, show_progress_bar=True, convert_to_tensor=True)
    cos_scores = cos_sim(query_embeddings, corpus_embeddings)
    top = torch.topk(cos_scores, 3, dim=1, largest=True, sorted=False)
    assert cos_scores.shape == (2, len(tiny.CORPUS)) and top.indices.shape == (2, 3)
    # Documents with an empty instruction are plain documents.
    plain = model.encode([d["text"] for d in corpus], batch_size=batch_size)
    torch.testing.assert_close(corpus_embeddings, plain)


@pytest.mark.parametrize("adapter", [LLAMA3_SIMCSE, LLAMA3_SUPERVISED])
def test_readme_snippet(released, adapter):
    # The reference README's "Preparing the model" and "Inference" sections, verbatim.
    l2v = LLM2Vec.from_pretrained(
        "McGill-NLP/LLM2Vec-Meta-Llama-3-8B-Instruct-mntp",
        peft_model_name_or_path=adapter,
        device_map="cuda" if torch.cuda.is_available() else "cpu",
        torch_dtype=torch.bfloat16,
    )
    instruction = (
        "Given a web search query, retrieve relevant passages that answer the query:"
    )
    queries = [
        [instruction, "how much protein should a female eat"],
        [instruction, "summit define"],
    ]
    q_reps = l2v.encode(queries)
    documents = [
        "As a general guideline, the CDC's average requirement of protein for women ages 19 to 70 is 46 grams per day.",
        "Definition of summit for English Language Learners. : 1  the highest point of a mountain.",
    ]
    d_reps = l2v.encode(documents)
    q_reps_norm = torch.nn.functional.normalize(q_reps, p=2, dim=1)
    d_reps_norm = torch.nn.functional.normalize(d_reps, p=2, dim=1)
    cos_sim = torch.mm(q_reps_norm, d_reps_norm.transpose(0, 1))
    assert cos_sim.shape == (2, 2) and torch.isfinite(cos_sim).all()
    assert l2v.name_or_path == LLAMA3  # the Llama-3 chat wrapper applies, as in the reference


# ------------------------------------------------------------------------------ inputs
@pytest.fixture(scope="module")
def encoder(tiny_llama):
    return LLM2Vec.from_pretrained(tiny_llama)


def test_every_input_form_of_the_reference(encoder):
    instruction, text = "Retrieve passages:", "Paris is the capital of France."
    pair = encoder.encode([[instruction, text]], show_progress_bar=False)
    plain = encoder.encode([text], show_progress_bar=False)
    same_as_pair = [
        [(instruction, text)],
        [[instruction, text, 0]],  # MEDI triples
        [[instruction, text, 0, "anything"]],
        [instruction, text, 0],  # one triple on its own
        np.array([[instruction, text]]),
    ]
    for form in same_as_pair:
        torch.testing.assert_close(encoder.encode(form, show_progress_bar=False), pair)
    torch.testing.assert_close(encoder.encode(text, show_progress_bar=False), plain)
    torch.testing.assert_close(encoder.encode(np.array([text]), show_progress_bar=False), plain)
    torch.testing.assert_close(encoder.encode([["", text]], show_progress_bar=False), plain)
    # [instruction, text] without an int is a list of two texts, as in the reference
    assert encoder.encode([instruction, text], show_progress_bar=False).shape == (2, encoder.hidden_size)


def test_a_lone_surrogate_is_named(encoder):
    with pytest.raises(ValueError, match=r"sentences\[1\]: the text holds a lone surrogate \(U\+D800 at character 3\)"):
        encoder.encode(["fine", "abc\ud800def"], show_progress_bar=False)
    with pytest.raises(ValueError, match=r"sentences\[0\]: the instruction holds a lone surrogate"):
        encoder.encode([["\udfff", "text"]], show_progress_bar=False)
