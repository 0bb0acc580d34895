"""Generate llama.cpp's logits for GGUF files taskfuse writes, for tests/io/test_gguf_llama_cpp.py.

    python scripts/make_llama_cpp_fixtures.py   # uses benchmarks/.llama-cpp-venv, building llama-cpp-python there

GGUF output exists for llama.cpp, and the rotary scaling it carries (linear and YaRN keys, Llama 3's rope_freqs
divisors) means something only as llama.cpp applies it; transformers' own GGUF loader ignores it. So: tiny seeded
models (taskfuse's test helpers) with and without scaled rotary embeddings are written by taskfuse's GGUF writer
(f32), and llama.cpp (llama-cpp-python, in its own virtual environment, built from source: none of its code enters
taskfuse) computes the logits of a fixed run of token ids past the models' original context. The GGUF files and
the logits go to tests/fixtures/llama_cpp/, with versions.json naming the llama-cpp-python version.

And one real model: SmolLM2-135M-Instruct as the LLM benchmark converts it, written by taskfuse as an f32 GGUF with
the tokenizer built from its Hugging Face folder. llama.cpp tokenizes fortunes and a chat prompt with it, and runs
the prompt's ids; smollm2.json keeps its ids, its 64 largest logits at the last positions, and the GGUF's sha256.

    python scripts/make_llama_cpp_fixtures.py --only smollm2   # just the real model's fixture

And the SentencePiece-style tokenizers (Llama 2 and Gemma kinds, tiny models): llama.cpp's ids for 100 fortunes and
two probes go to sentencepiece.json (--only sentencepiece).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from taskfuse.programs.gguf_output import convert_to_gguf, gguf_name  # noqa: E402
from taskfuse.testing.tiny_llm import save_tiny_causal_lm  # noqa: E402
from taskfuse.zoo.store import file_digest  # noqa: E402

OUT = ROOT / "tests" / "fixtures" / "llama_cpp"
VENV = ROOT / "benchmarks" / ".llama-cpp-venv"
VERSION = "0.3.16"
TOKENS = list(range(3, 250))  # positions 0-246: past the original context of every scaled case
KEPT_EVERY = 8  # the logits of every eighth position are stored (31 of 247)
ATTENTION_SCALE = 8.0  # sharp attention, so that how positions are rotated moves the logits (tiny_llm's note)
LLAMA3 = {"rope_type": "llama3", "factor": 4.0, "low_freq_factor": 1.0, "high_freq_factor": 8.0,
          "original_max_position_embeddings": 64}
# case -> (architecture, rope_scaling, layers)
CASES = {"llama": ("llama", None, 2),
         "llama_llama3": ("llama", LLAMA3, 2),
         "llama_linear": ("llama", {"rope_type": "linear", "factor": 4.0}, 2),
         "qwen2_yarn": ("qwen2", {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32}, 2),
         "gemma3_linear": ("gemma3", {"rope_type": "linear", "factor": 8.0}, 6)}
# Run inside the llama.cpp environment: the logits of every position, as float32 .npy
LLAMA_CPP_LOGITS = """
import sys, numpy as np
from llama_cpp import Llama
model = Llama(model_path=sys.argv[1], n_ctx=512, n_batch=512, logits_all=True, n_threads=2, verbose=False)
tokens = [int(t) for t in sys.argv[3].split(",")]
model.eval(tokens)
np.save(sys.argv[2], np.asarray(model.scores[:len(tokens)], dtype=np.float32)[::int(sys.argv[4])])
"""
# The real model: llama.cpp's tokenization of each text (specials parsed) and the top logits of a prompt's last
# positions, as JSON on stdout
LLAMA_CPP_SMOLLM2 = """
import json, sys, numpy as np
from llama_cpp import Llama
job = json.loads(sys.stdin.read())
model = Llama(model_path=job["gguf"], n_ctx=512, logits_all=True, n_threads=2, verbose=False)
ids = [model.tokenize(t.encode(), add_bos=False, special=True) for t in job["texts"]]
model.eval(job["prompt"])
last = np.asarray(model.scores[:len(job["prompt"])], dtype=np.float32)[-job["positions"]:]
top = [sorted(np.argsort(-row)[:job["top"]].tolist()) for row in last]
print(json.dumps({"ids": ids, "top": top, "logits": [[float(row[i]) for i in t] for row, t in zip(last, top)]}))
"""
SMOLLM2_TEXTS = 40  # fortunes tokenized
SMOLLM2_POSITIONS, SMOLLM2_TOP = 4, 64
SMOLLM2_QUESTION = "Which Debian archive section holds a package that formats manual pages?"


def ensure_llama_cpp() -> Path:
    python = VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    if subprocess.run([str(python), "-c", "import llama_cpp"], capture_output=True).returncode != 0:
        # from source: PyPI has no CPU wheel; CMake and a C++ compiler build llama.cpp (10-20 minutes on 2 cores)
        subprocess.run([str(python), "-m", "pip", "install", "numpy", "typing-extensions", "diskcache", "jinja2"],
                       check=True)
        subprocess.run([str(python), "-m", "pip", "install", "--no-deps", f"llama-cpp-python=={VERSION}"],
                       check=True, env={**os.environ, "CMAKE_ARGS": "-DLLAMA_CURL=OFF"})
    return python


# SentencePiece-style tokenizers (byte fallback, scores decided by taskfuse from the merges) as llama.cpp reads them
SENTENCEPIECE_KINDS = {"llama": "llama", "gemma3": "gemma"}  # architecture -> tokenizer kind
LLAMA_CPP_TOKENIZE = """
import json, sys
from llama_cpp import Llama
job = json.loads(sys.stdin.read())
model = Llama(model_path=job["gguf"], n_ctx=64, verbose=False, vocab_only=True)
print(json.dumps([model.tokenize(t.encode(), add_bos=False, special=True) for t in job["texts"]]))
"""


def sentencepiece_texts() -> list[str]:
    """Fortunes the tokenizers were not trained on the start of, and probes for byte fallback and accents. None
    starts with a blank: there Hugging Face's Metaspace adds no "▁" before the text, SentencePiece (and llama.cpp)
    does, whatever the file says (docs/llm.md)."""
    from taskfuse.testing.tiny_llm import fortune_texts

    return [t for t in fortune_texts(2100)[2000:] if not t[0].isspace()] + [
        "emoji 😀 and 漢字 by byte fallback", "Spaces  twice,\ttabs\tand\nnew lines -- déjà vu!"]


def sentencepiece_gguf(tmp: Path, arch: str) -> tuple[Path, Path]:
    """A tiny model of `arch` with its SentencePiece-style tokenizer, and the f32 GGUF taskfuse writes of it."""
    from taskfuse.testing.tiny_llm import sentencepiece_tokenizer

    folder = save_tiny_causal_lm(tmp / arch, arch, tokenizer=sentencepiece_tokenizer(SENTENCEPIECE_KINDS[arch]))
    out = tmp / f"{arch}-out"
    convert_to_gguf(folder, out, "f32")
    return folder, out / gguf_name(out, "f32")


def make_sentencepiece(python: Path) -> None:
    record = {"texts": sentencepiece_texts(), "kinds": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for arch in SENTENCEPIECE_KINDS:
            _, path = sentencepiece_gguf(Path(tmp), arch)
            done = subprocess.run([str(python), "-c", LLAMA_CPP_TOKENIZE], capture_output=True, text=True,
                                  input=json.dumps({"gguf": str(path), "texts": record["texts"]}), check=True)
            ids = json.loads(done.stdout.splitlines()[-1])
            record["kinds"][arch] = {"gguf_sha256": file_digest(path), "ids": ids}
    (OUT / "sentencepiece.json").write_text(json.dumps(record) + "\n")
    print("sentencepiece: llama.cpp's tokenization written")


def smollm2_gguf(tmp: Path) -> Path:
    """SmolLM2-135M-Instruct, converted as the LLM benchmark converts it, written by taskfuse as an f32 GGUF."""
    from taskfuse.llm.base import base_model_dir

    out = tmp / "smollm2"
    convert_to_gguf(base_model_dir(), out, "f32")
    return out / gguf_name(out, "f32")


def smollm2_prompt() -> list[int]:
    from transformers import AutoTokenizer

    from taskfuse.llm.base import base_model_dir

    tok = AutoTokenizer.from_pretrained(base_model_dir())
    return list(tok.apply_chat_template([{"role": "user", "content": SMOLLM2_QUESTION}], add_generation_prompt=True,
                                        tokenize=True, return_dict=True)["input_ids"])


def make_smollm2(python: Path) -> None:
    from taskfuse.testing.tiny_llm import fortune_texts

    texts = fortune_texts(SMOLLM2_TEXTS) + ["<|im_start|>user\nhi there<|im_end|>\n"]
    with tempfile.TemporaryDirectory() as tmp:
        path = smollm2_gguf(Path(tmp))
        job = {"gguf": str(path), "texts": texts, "prompt": smollm2_prompt(), "positions": SMOLLM2_POSITIONS,
               "top": SMOLLM2_TOP}
        done = subprocess.run([str(python), "-c", LLAMA_CPP_SMOLLM2], input=json.dumps(job), capture_output=True,
                              text=True, check=True)
        result = json.loads(done.stdout.strip().splitlines()[-1])
        record = {"gguf_sha256": file_digest(path), "texts": texts, "prompt": job["prompt"], **result}
    (OUT / "smollm2.json").write_text(json.dumps(record) + "\n")
    print("smollm2: llama.cpp's tokenization and logits written")


def tiny_gguf(tmp: Path, case: str) -> Path:
    """The f32 GGUF taskfuse writes of the tiny seeded model of `case`."""
    arch, scaling, layers = CASES[case]
    folder = save_tiny_causal_lm(tmp / case / case, arch, rope_scaling=scaling, layers=layers,
                                 attention_scale=ATTENTION_SCALE)
    out = tmp / case / "out"
    convert_to_gguf(folder, out, "f32")
    return out / gguf_name(out, "f32")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=["tiny", "smollm2", "sentencepiece"])
    args = parser.parse_args()
    python = ensure_llama_cpp()
    OUT.mkdir(parents=True, exist_ok=True)
    if args.only in (None, "smollm2"):
        make_smollm2(python)
    if args.only in (None, "sentencepiece"):
        make_sentencepiece(python)
    if args.only not in (None, "tiny"):
        return
    with tempfile.TemporaryDirectory() as tmp:
        for case in CASES:
            target = OUT / f"{case}.gguf"
            target.write_bytes(tiny_gguf(Path(tmp), case).read_bytes())
            subprocess.run([str(python), "-c", LLAMA_CPP_LOGITS, str(target), str(OUT / f"{case}.logits.npy"),
                            ",".join(map(str, TOKENS)), str(KEPT_EVERY)], check=True)
            print(f"{case}: llama.cpp logits written")
    version = subprocess.run([str(python), "-c", "import llama_cpp; print(llama_cpp.__version__)"],
                             capture_output=True, text=True, check=True).stdout.strip()
    cases = {c: {"architecture": a, "rope_scaling": s, "layers": n} for c, (a, s, n) in CASES.items()}
    (OUT / "versions.json").write_text(json.dumps({"llama-cpp-python": version, "tokens": TOKENS,
                                                   "kept_every": KEPT_EVERY, "attention_scale": ATTENTION_SCALE,
                                                   "cases": cases}, indent=2) + "\n")


if __name__ == "__main__":
    main()
