"""Regenerate the ``l2v-real`` suite from Debian packages (run on Debian or Ubuntu).

    apt-get update -o Acquire::Languages=en
    apt-get install fortunes sword-text-kjv sword-text-web diatheke
    python -m l2v_eval.tasks.real.build            # rewrites the data files next to this module

Sources (see SOURCES.md for licences): the package descriptions of the configured APT
archive (``apt-cache dumpavail``), Debian's ``fortunes`` files, and the King James and
World English Bible translations read with ``diatheke``.

Every item (a package, a fortune, a Bible chapter) is assigned to ``train`` or ``test`` by
a hash of its key, so the split does not depend on what else the archive holds; the test
tasks are drawn from ``test`` items only and the training files (``train/``) from
``train`` items only. Sampling is seeded: the same inputs give the same files.
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import random
import re
import subprocess
from collections import Counter, defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
FORTUNES_DIR = Path("/usr/share/games/fortunes")
SEED = 20261130
TEST_SHARE = 0.35

# Topical fortune files for clustering; the rest (sayings, people, work, ...) feed quote completion.
CLUSTER_FORTUNES = ("computers", "politics", "science", "art", "startrek", "law", "food", "sports")
COMPLETION_FORTUNES = ("people", "cookie", "wisdom", "work", "platitudes", "miscellaneous", "men-women",
                       "literature", "humorists", "songs-poems", "education", "love", "kids", "fortunes")
# Files never used: dictionary-like definitions (held out), offensive, non-prose and non-English ones.
SKIPPED_FORTUNES = ("definitions", "ascii-art", "translate-me", "off", "zippy", "riddles")
CLASS_SECTIONS = ("admin", "games", "graphics", "math", "net", "science", "sound", "text")
BIBLE = {"kjv": "engKJV2006eb", "web": "engWEB2015eb"}
BIBLE_BOOKS = ("Genesis", "Exodus", "Deuteronomy", "Joshua", "Judges", "Ruth", "1 Samuel", "2 Samuel", "1 Kings",
               "Job", "Psalms", "Proverbs", "Ecclesiastes", "Isaiah", "Jeremiah", "Daniel", "Matthew", "Mark",
               "Luke", "John", "Acts", "Romans", "1 Corinthians", "Hebrews", "James", "Revelation")


def split_of(key: str) -> str:
    digest = int(hashlib.sha1(key.encode("utf-8")).hexdigest()[:8], 16)
    return "test" if digest / 0xFFFFFFFF < TEST_SHARE else "train"


def clean(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


# --- sources -----------------------------------------------------------------------------------

def _stanzas(text: str):
    """Fields of each deb822 stanza (continuation lines joined with newlines)."""
    for stanza in text.split("\n\n"):
        fields: dict[str, str] = {}
        key = None
        for line in stanza.splitlines():
            if line.startswith((" ", "\t")) and key:
                fields[key] += "\n" + line
            elif ":" in line:
                key, _, value = line.partition(":")
                fields[key] = value.strip()
        if "Package" in fields:
            yield fields


def read_packages() -> list[dict]:
    """One row per package with a long description: name, section, short and long description.

    Sections come from ``apt-cache dumpavail``; long descriptions from the archive's
    ``Translation-en`` index (fetched by ``apt-get update -o Acquire::Languages=en``).
    """
    dump = subprocess.run(["apt-cache", "dumpavail"], check=True, capture_output=True, text=True).stdout
    sections = {f["Package"]: f.get("Section", "").split("/")[-1] for f in _stanzas(dump)}
    descriptions: dict[str, str] = {}
    for index in sorted(Path("/var/lib/apt/lists").glob("*_i18n_Translation-en*")):
        text = subprocess.run(["/usr/lib/apt/apt-helper", "cat-file", str(index)], check=True,
                              capture_output=True, text=True).stdout
        for f in _stanzas(text):
            descriptions.setdefault(f["Package"], f.get("Description-en", ""))
    if not descriptions:
        raise SystemExit("no Translation-en index: run `apt-get update -o Acquire::Languages=en` first")
    rows, seen_long, seen_short = [], set(), set()
    for name in sorted(descriptions):
        short, _, body = descriptions[name].partition("\n")
        paragraphs = [clean(p.replace("\n", " ")) for p in re.split(r"\n\s\.\s*(?:\n|$)", body)]
        first = next((p for p in paragraphs if p), "")
        long = _cut_sentences(first, 320)
        if not (60 <= len(long) and 12 <= len(short) <= 80) or not long.isascii() or not short.isascii():
            continue
        fingerprint = long[:80].lower()
        if fingerprint in seen_long or short.lower() in seen_short:
            continue  # -dev/-doc/-data siblings repeat one description
        seen_long.add(fingerprint)
        seen_short.add(short.lower())
        rows.append({"name": name, "section": sections.get(name, ""), "short": clean(short), "long": long})
    return rows


def _cut_sentences(text: str, limit: int) -> str:
    """Whole sentences up to ``limit`` characters (at least the first sentence, cut at a word)."""
    sentences = re.split(r"(?<=[.!?])\s+", text)
    out = ""
    for s in sentences:
        if out and len(out) + 1 + len(s) > limit:
            break
        out = f"{out} {s}".strip()
    return out if len(out) <= limit else out[:limit].rsplit(" ", 1)[0]


def read_fortunes() -> dict[str, list[str]]:
    out = {}
    for path in sorted(FORTUNES_DIR.iterdir()):
        if path.suffix or not path.is_file() or path.name in SKIPPED_FORTUNES:
            continue
        entries = path.read_text(encoding="utf-8", errors="replace").split("\n%\n")
        texts = [clean(e) for e in entries]
        out[path.name] = [t for t in texts if 40 <= len(t) <= 260 and t.isascii()]
    return out


def read_bible() -> dict[str, dict[tuple[str, int, int], str]]:
    """{translation: {(book, chapter, verse): text}} for BIBLE_BOOKS."""
    pattern = re.compile(r"^((?:\d )?[A-Z][A-Za-z ]+?) (\d+):(\d+): ", re.M)
    out: dict[str, dict] = {}
    for name, module in BIBLE.items():
        verses = {}
        for book in BIBLE_BOOKS:
            text = subprocess.run(["diatheke", "-b", module, "-f", "plain", "-k", book], check=True,
                                  capture_output=True, text=True).stdout
            text = text.rsplit(f"({module})", 1)[0]
            marks = list(pattern.finditer(text))
            for m, nxt in zip(marks, [*marks[1:], None]):
                body = text[m.end(): nxt.start() if nxt else len(text)]
                body = clean(body.replace("¶", "").replace("\u2019", "'").replace("\u201c", '"').replace("\u201d", '"'))
                if body:
                    verses[(m.group(1), int(m.group(2)), int(m.group(3)))] = body
        out[name] = verses
    return out


def words(text: str) -> set[str]:
    return {w for w in re.findall(r"[a-z0-9]+", text.lower()) if len(w) > 2 and w not in STOPWORDS}


STOPWORDS = set("the and for with that this from are can its his her you your all not but has have was were will "
                "shall unto them they their there which who what when into out also any one package provides "
                "thou thee thy said".split())


def most_similar(query: str, candidates: list[set[str]], exclude: int, below: float = 1.01) -> int:
    """Index of the candidate (a ``words`` set) sharing the most content words with ``query`` (Jaccard
    similarity, which must stay under ``below``), not ``exclude``."""
    q = words(query)
    best, best_score = -1, -1.0
    for i, w in enumerate(candidates):
        if i == exclude:
            continue
        score = len(q & w) / (len(q | w) or 1)
        if best_score < score < below:
            best, best_score = i, score
    return best


# --- tasks -------------------------------------------------------------------------------------

def package_tasks(packages: list[dict], rng: random.Random):
    test = [p for p in packages if split_of("pkg:" + p["name"]) == "test"]
    train = [p for p in packages if split_of("pkg:" + p["name"]) == "train"]
    chosen = rng.sample(test, 250)
    # Each query's lexically closest other description joins the corpus as a distractor, so
    # matching words alone does not solve the task.
    pool = [p for p in test if p not in chosen]
    pool_words = [words(p["long"]) for p in pool]
    distractors = {pool[most_similar(p["short"] + " " + p["long"], pool_words, -1)]["name"]: None for p in chosen}
    docs = [p["long"] for p in chosen] + [next(p["long"] for p in pool if p["name"] == n) for n in distractors]
    retrieval = {
        "queries": [{"id": f"q{i}", "text": p["short"]} for i, p in enumerate(chosen)],
        "corpus": [{"id": f"d{i}", "text": t} for i, t in enumerate(docs)],
        "qrels": [{"query_id": f"q{i}", "doc_id": f"d{i}", "score": 1} for i in range(len(chosen))],
    }
    by_section = defaultdict(list)
    for p in test:
        if p["section"] in CLASS_SECTIONS and p not in chosen and p["name"] not in distractors:
            by_section[p["section"]].append(p)
    classification = []
    for section in CLASS_SECTIONS:
        picked = rng.sample(by_section[section], 50)
        for k, p in enumerate(picked):
            text = f"{p['short']}. {_cut_sentences(p['long'], 160)}"
            classification.append({"text": text, "label": section, "split": "train" if k < 20 else "test"})
    pairs = [{"query": p["short"], "positive": p["long"], "dataset": "packages"} for p in train]
    return {"retrieval": retrieval, "classification": classification}, pairs, [p["long"] for p in train]


def fortune_tasks(fortunes: dict[str, list[str]], rng: random.Random):
    clustering, unlabeled = [], []
    for name, texts in fortunes.items():
        unlabeled += [t for t in texts if split_of(f"fortune:{t}") == "train"]
    for name in CLUSTER_FORTUNES:
        test = [t for t in fortunes[name] if split_of(f"fortune:{t}") == "test"]
        clustering += [{"text": t, "label": name} for t in rng.sample(test, min(50, len(test)))]
    halved = {t: _halve(t) for name in COMPLETION_FORTUNES for t in fortunes.get(name, [])}
    halved = {t: h for t, h in halved.items() if h is not None}
    # A beginning or ending shared by several quotations ("If at first you don't succeed,",
    # "-- Mark Twain") has no single answer, and would tie test items to training items.
    seen = Counter(part for h in halved.values() for part in h)
    halves_test, halves_train = [], []
    for t, h in halved.items():
        if seen[h[0]] == 1 and seen[h[1]] == 1 and not h[1].startswith("-"):
            (halves_test if split_of(f"fortune:{t}") == "test" else halves_train).append(h)
    chosen = rng.sample(halves_test, 300)
    # Pair classification on other test quotations (picked by hash, no random draw): a beginning with
    # its own ending, or with the ending among these that shares the most words with it.
    taken = set(chosen)
    rest = sorted((h for h in halves_test if h not in taken), key=lambda h: hashlib.sha1(h[0].encode()).hexdigest())
    rest = rest[:300]
    endings = [words(b) for _, b in rest]
    pair_rows = []
    for k, (a, b) in enumerate(rest):
        if k % 2 == 0:
            pair_rows.append({"sentence1": a, "sentence2": b, "label": 1})
        else:
            pair_rows.append({"sentence1": a, "sentence2": rest[most_similar(a, endings, k)][1], "label": 0})
    queries = [{"id": f"q{i}", "text": a} for i, (a, _) in enumerate(chosen)]
    corpus = [{"id": f"d{i}", "text": b} for i, (_, b) in enumerate(chosen)]
    top_ranked = []
    for i in range(len(chosen)):
        others = rng.sample([j for j in range(len(chosen)) if j != i], 9)
        candidates = [i, *others]
        rng.shuffle(candidates)
        top_ranked.append({"query_id": f"q{i}", "doc_ids": [f"d{j}" for j in candidates]})
    reranking = {"queries": queries, "corpus": corpus, "top_ranked": top_ranked,
                 "qrels": [{"query_id": f"q{i}", "doc_id": f"d{i}", "score": 1} for i in range(len(chosen))]}
    pairs = [{"query": a, "positive": b, "dataset": "fortunes"} for a, b in halves_train]
    return {"clustering": clustering, "reranking": reranking, "pair_classification": pair_rows}, pairs, unlabeled


def _halve(text: str) -> tuple[str, str] | None:
    """A fortune cut at the sentence boundary nearest its middle: (beginning, continuation)."""
    cuts = [m.end() for m in re.finditer(r"[.!?;:,]\s", text)]
    cuts = [c for c in cuts if 25 <= c <= len(text) - 20]
    if not cuts:
        return None
    cut = min(cuts, key=lambda c: abs(c - len(text) / 2))
    return text[:cut].strip(), text[cut:].strip()


def bible_tasks(bible: dict, rng: random.Random):
    """Training pairs (KJV verse -> WEB verse) and texts from train chapters. Test chapters are not
    used by any task: the two translations of a verse share so many words that a small sentence
    encoder already tells them from other verses almost perfectly (max AP 0.97-0.98, measured with
    same-book and whole-Bible nearest-wording negatives)."""
    kjv, web = bible["kjv"], bible["web"]
    refs = [r for r in kjv if r in web and 40 <= len(kjv[r]) <= 300]
    in_test = {r: split_of(f"bible:{r[0]} {r[1]}") == "test" for r in refs}
    test_refs = [r for r in refs if in_test[r]]
    rng.sample(test_refs, 300)  # (a draw kept so the training files' sampling stays as published)
    pairs = [{"query": kjv[r], "positive": web[r], "dataset": "bible"} for r in refs if not in_test[r]]
    unlabeled = [web[r] for r in refs if not in_test[r]]
    return {}, pairs, unlabeled


# --- output ------------------------------------------------------------------------------------

def write_jsonl(path: Path, rows: list[dict]) -> None:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wt", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def add_negatives(pairs: list[dict], rng: random.Random) -> list[dict]:
    """A negative per pair: the positive of another pair from the same source."""
    by_source = defaultdict(list)
    for p in pairs:
        by_source[p["dataset"]].append(p["positive"])
    for p in pairs:
        pool = by_source[p["dataset"]]
        negative = p["positive"]
        while negative == p["positive"]:
            negative = pool[rng.randrange(len(pool))]
        p["negative"] = negative
    return pairs


def build(out: Path = HERE) -> None:
    rng = random.Random(SEED)
    packages, fortunes, bible = read_packages(), read_fortunes(), read_bible()
    pkg, pkg_pairs, pkg_texts = package_tasks(packages, rng)
    frt, frt_pairs, frt_texts = fortune_tasks(fortunes, rng)
    bib, bib_pairs, bib_texts = bible_tasks(bible, rng)
    for name, rows in pkg["retrieval"].items():
        write_jsonl(out / f"retrieval_{name}.jsonl", rows)
    for name, rows in frt["reranking"].items():
        write_jsonl(out / f"reranking_{name}.jsonl", rows)
    write_jsonl(out / "classification.jsonl", pkg["classification"])
    write_jsonl(out / "clustering.jsonl", frt["clustering"])
    write_jsonl(out / "pair_classification.jsonl", frt["pair_classification"])
    # Training files, from train items only: sized so the package stays a few MB.
    train = out / "train"
    train.mkdir(exist_ok=True)
    # Different items can share a text (a quotation quoted inside a longer one); such texts stay test-only.
    tested = {v for rows in (*pkg["retrieval"].values(), *frt["reranking"].values(), pkg["classification"],
                             frt["clustering"], frt["pair_classification"]) for r in rows for v in r.values()
              if isinstance(v, str)}
    pairs = add_negatives(rng.sample(pkg_pairs, 4000) + rng.sample(frt_pairs, min(3000, len(frt_pairs)))
                          + rng.sample(bib_pairs, 3000), rng)
    pairs = [p for p in pairs if not tested & {p["query"], p["positive"], p["negative"]}]
    rng.shuffle(pairs)
    write_jsonl(train / "pairs.jsonl.gz", pairs)
    unlabeled = [t for t in rng.sample(pkg_texts, 6000) + frt_texts + rng.sample(bib_texts, 4000) if t not in tested]
    rng.shuffle(unlabeled)
    with gzip.open(train / "unlabeled.txt.gz", "wt", encoding="utf-8") as f:
        f.write("\n".join(unlabeled) + "\n")
    print(f"packages {len(packages)}, fortunes {sum(map(len, fortunes.values()))}, verses {len(bible['kjv'])}; "
          f"train pairs {len(pairs)}, unlabeled texts {len(unlabeled)}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=HERE, help="folder to write (default: next to this module)")
    build(parser.parse_args(argv).out)


if __name__ == "__main__":
    main()
