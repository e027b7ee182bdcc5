#!/usr/bin/env python3
"""Validate corpora/es-qa: JSON, ids, counts, answers as substrings, length ranges."""
import json, re, sys, collections
from pathlib import Path

D = Path(__file__).resolve().parent
errs = []

def load(name):
    rows = []
    for i, line in enumerate((D / name).read_text(encoding="utf-8").splitlines(), 1):
        try:
            rows.append(json.loads(line))
        except Exception as e:
            errs.append(f"{name}:{i}: bad JSON: {e}")
    return rows

def words(s):
    return len(re.findall(r"\w+(?:[-']\w+)*", s))

def sentences(s):
    return [x for x in re.split(r"(?<=[.!?])\s+(?=[¿¡A-ZÁÉÍÓÚÑ0-9«\"])", s.strip()) if x]

corpus, queries = load("corpus.jsonl"), load("queries.jsonl")
n = len(corpus)
if n != 240 or len(queries) != 240:
    errs.append(f"expected 240 paragraphs and 240 queries, got {n} and {len(queries)}")
if n != len(queries):
    errs.append(f"{n} paragraphs but {len(queries)} queries")
temas = collections.Counter()
titles = collections.Counter()
for k, p in enumerate(corpus, 1):
    pid = f"p{k:03d}"
    if p.get("_id") != pid:
        errs.append(f"corpus line {k}: id {p.get('_id')} != {pid}")
    if set(p) != {"_id", "title", "text", "metadata"} or not p.get("title"):
        errs.append(f"{pid}: bad fields")
    tema = p.get("metadata", {}).get("tema")
    temas[tema] += 1
    titles[p.get("title")] += 1
    w, s = words(p["text"]), len(sentences(p["text"]))
    if not 70 <= w <= 140:
        errs.append(f"{pid}: {w} words")
    if not 3 <= s <= 6:
        errs.append(f"{pid}: {s} sentences")
if len({p["text"] for p in corpus}) != n or len({q["text"] for q in queries}) != len(queries):
    errs.append("duplicate paragraph or query text")
if len(temas) != 12 or set(temas.values()) != {20}:
    errs.append(f"expected 12 temas x 20 paragraphs: {dict(temas)}")
for t, c in titles.items():
    if c > 1:
        errs.append(f"title repeated {c}x: {t}")
byid = {p["_id"]: p for p in corpus}
for k, q in enumerate(queries, 1):
    qid = f"q{k:03d}"
    if q.get("_id") != qid:
        errs.append(f"queries line {k}: id {q.get('_id')} != {qid}")
    t = q.get("text", "")
    if not (t.startswith("¿") and t.endswith("?")):
        errs.append(f"{qid}: not a ¿...? question: {t}")
    if not 6 <= words(t) <= 15:
        errs.append(f"{qid}: {words(t)} words: {t}")
    p = byid.get(f"p{k:03d}")
    a = q.get("metadata", {}).get("answer", "")
    if not p or not a or a not in p["text"]:
        errs.append(f"{qid}: answer not a substring of p{k:03d}: {a[:60]}")
    elif a not in sentences(p["text"]):
        errs.append(f"{qid}: answer is not a whole sentence: {a[:60]}")
lines = (D / "qrels" / "test.tsv").read_text(encoding="utf-8").splitlines()
if lines[0] != "query-id\tcorpus-id\tscore":
    errs.append("qrels: bad header")
exp = [f"q{k:03d}\tp{k:03d}\t1" for k in range(1, len(queries) + 1)]
if lines[1:] != exp:
    errs.append("qrels: lines do not match q###/p### 1:1")
print(f"{n} paragraphs, {len(queries)} queries, temas: {dict(temas)}")
for e in errs:
    print("ERROR", e)
print("OK" if not errs else f"{len(errs)} errors")
sys.exit(1 if errs else 0)
