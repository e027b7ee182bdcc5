"""beto-search as a library, top to bottom. Runs offline: python examples/library.py [MODEL [INDEX]]

MODEL: a BETO folder (or any BERT or sentence-transformers folder); without one, a tiny model
with BETO's shape and RANDOM weights is built from the sample corpus (its rankings mean nothing).
"""

import shutil
import sys
import tempfile
from pathlib import Path

from beto_search import BetoEncoder, SearchEngine
from beto_search.adapt import WorseModelError
from beto_search.testing import build_bert_folder, train_vocab

work = Path(tempfile.mkdtemp(prefix="beto-search-example-"))
corpus = Path(__file__).resolve().parents[1] / "corpora" / "es"
if len(sys.argv) > 1:
    model = sys.argv[1]
else:
    texts = [p.read_text(encoding="utf-8") for p in sorted(corpus.rglob("*.txt"))]
    model = str(build_bert_folder(work / "model", train_vocab(texts, work / "vocab")))
index = sys.argv[2] if len(sys.argv) > 2 else work / "index"

engine = SearchEngine.open(index, model=model)  # opens or creates
engine.ingest([corpus])  # files and folders; a re-run encodes only what changed
engine.add(
    [
        {
            "id": "a1",
            "title": "Macondo",
            "text": "Macondo es un pueblo imaginario, fundado junto a un río de aguas diáfanas.",
            "metadata": {"autor": "García Márquez"},
        }
    ]
)  # upsert by id
hits = engine.search("pueblo imaginario", k=5)  # hybrid by default
for h in hits:
    print(h.rank, f"{h.score:.3f}", h.doc_id, h.title, h.snippet[:60])
# filters ignore case and accents; a field no document has comes back as a warning
print(engine.search("pueblo", mode="semantic", where={"autor": "garcia marquez"})[0].doc_id)
print(engine.search("pueblo", where={"autr": "García Márquez"}).warnings)
print([h.doc_id for h in engine.similar("a1", k=3)])
engine.delete(["a1"])

try:  # label-free training on the index's own chunks: a short run (drop max_steps for more)
    engine.adapt(work / "mio", max_minutes=30, max_steps=8)
    engine.reembed(work / "mio")  # switch the index to it, atomically
except WorseModelError as err:  # the self-check scored it lower: the index keeps its model
    print(err)
print(engine.tune().config.label())  # choose the hybrid fusion for this index and model

vectors = BetoEncoder(model, pooling="max").encode_documents(["Un texto cualquiera."])
print(vectors.shape)
engine.close()
shutil.rmtree(work)  # the demo's model, index and trained copy (an INDEX given stays)
