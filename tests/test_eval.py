"""The HumanEval-Rust harness with a real rustc, and the pass@k estimator."""
import shutil

import pytest

from assistant.lab.eval.humaneval import Problem, evaluate, pass_at_k, passes, truncate

ADD = Problem("add", "/// Adds.\nfn add(a: i32, b: i32) -> i32 {\n",
              "}\n\nfn main() {\n    assert_eq!(add(2, 3), 5);\n}\n", ["\n}"])
needs_rustc = pytest.mark.skipif(shutil.which("rustc") is None, reason="rustc is not installed")


@needs_rustc
def test_a_right_completion_passes_and_wrong_or_broken_ones_fail():
    assert passes(ADD, "    a + b")
    assert not passes(ADD, "    a - b")             # runs, assertion panics
    assert not passes(ADD, "    a + ")              # does not compile
    loop = Problem("spin", "fn spin() {\n", "}\n\nfn main() { spin(); }\n", ["\n}"])
    assert not passes(loop, "    loop {}", timeout=1.0)


def test_completions_are_cut_at_the_first_stop_string():
    assert truncate("    a + b\n}\n\nfn extra() {}", ["\n}"]) == "    a + b"
    assert truncate("    a + b", ["\n}"]) == "    a + b"


def test_pass_at_k_is_the_unbiased_estimator():
    assert pass_at_k(20, 0, 10) == 0.0 and pass_at_k(20, 11, 10) == 1.0
    assert pass_at_k(5, 1, 1) == pytest.approx(0.2)
    assert pass_at_k(20, 1, 10) == pytest.approx(0.5)


@needs_rustc
def test_evaluate_scores_greedy_and_sampled_completions():
    def greedy(prompt, stop, n):
        return ["    a + b\n}\n"] * n

    def sample(prompt, stop, n):  # every other sample is wrong: 10 of 20 right
        return ["    a + b\n}" if i % 2 else "    a * b\n}" for i in range(n)]

    result = evaluate([ADD], greedy, sample, n=20)
    assert result["pass_at_1"] == 1.0 and result["n"] == 1
    assert result["pass_at_10"] == pytest.approx(pass_at_k(20, 10, 10))


def test_eval_recall_runs_probes_at_each_distance(rustle, tmp_path):
    import json as _json

    import torch

    from model.config import ModelConfig
    from model.io import save_model
    from model.model import RustleLM
    from tokenizer import DEFAULT_TOKENIZER

    torch.manual_seed(0)
    config = ModelConfig(vocab_size=16384, d_model=32, n_heads=2, n_kv_heads=1, head_dim=16, mlp_hidden=64,
                         layer_pattern=("swa", "lql"), window=32, lql_dim=16, lql_heads=1)
    save_model(RustleLM(config), tmp_path / "m", DEFAULT_TOKENIZER)
    out = rustle("eval", "recall", "--files", "data/sample.rs", "--model", str(tmp_path / "m"),
                 "--multiples", "1,4", "--probes", "3", "--kinds", "passkey,identifier,line,span,random",
                 "--json").stdout
    rows = [_json.loads(line) for line in out.splitlines()]
    assert [(r["kind"], r["multiple"], r["distance"]) for r in rows] == [
        ("passkey", 1, 32), ("passkey", 4, 128), ("identifier", 1, 32), ("identifier", 4, 128), ("line", 1, 32),
        ("line", 4, 128), ("span", 1, 32), ("span", 4, 128), ("random", 1, 32), ("random", 4, 128)]
    assert all(r["probes"] == 3 and 0.0 <= r["accuracy"] <= 1.0 and 0.0 <= r["token_accuracy"] <= 1.0 for r in rows)
    assert all(r["token_accuracy"] == r["accuracy"] for r in rows if r["kind"] in ("span", "random"))
    one = rustle("eval", "recall", "--files", "data/sample.rs", "--model", str(tmp_path / "m"), "--multiples", "1,4",
                 "--probes", "3", "--kinds", "passkey,identifier,line,span,random", "--json", "--threads", "1").stdout
    assert [_json.loads(line) for line in one.splitlines()] == rows      # side by side with others: the same probes
    bad = rustle("eval", "recall", "--files", "data/sample.rs", "--model", str(tmp_path / "m"), "--threads", "0",
                 check=False)
    assert bad.returncode == 2 and "--threads" in bad.stdout


def test_recall_prompts_end_where_the_definition_tokens_break():
    """A prompt cut inside a token, or ending in a space the next token would carry, asks for a token
    sequence training never shows; every probe's query must stop at a boundary of the definition's tokens."""
    import random

    from assistant.lab.eval.recall import _continuation, _probe
    from tokenizer import DEFAULT_TOKENIZER, load_tokenizer

    tok, rng = load_tokenizer(DEFAULT_TOKENIZER), random.Random(0)
    for _ in range(50):
        definition, query, key = _probe("passkey", rng, tok)
        assert not query[-1].isspace() and key.startswith(" ") and f"={key};" in definition
        definition, query, rest = _probe("identifier", rng, tok)
        head = query.strip()
        name = definition.removeprefix("pub fn ").split("(")[0]
        assert head and rest and head + rest == name
        spelled = tok.encode(f" {name}", add_special_tokens=False).ids
        head_ids = tok.encode(f" {head}", add_special_tokens=False).ids
        assert spelled[:len(head_ids)] == head_ids
        assert _continuation(tok, query, rest) == spelled[len(head_ids):]     # graded on the definition's tokens
        definition, query, rest = _probe("line", rng, tok)
        assert query.startswith("\nlet ") and rest and query + rest == "\n" + definition.rstrip("\n")
        line_ids = tok.encode("\n" + definition.rstrip("\n"), add_special_tokens=False).ids
        query_ids = tok.encode(query, add_special_tokens=False).ids
        assert line_ids[:len(query_ids)] == query_ids and len(query_ids) < len(line_ids)
        assert _continuation(tok, query, rest) == line_ids[len(query_ids):]


def test_eval_lines_flags_reach_the_engine_config():
    from assistant.cli.complete import _engine_config
    from assistant.cli.main import build_parser
    from assistant.engine.copy import CopyConfig

    args = build_parser().parse_args(["eval", "lines", "tasks.jsonl", "--copy-n-min", "3", "--copy-max-weight", "0.9",
                                      "--no-guide", "--context", "local"])
    config = _engine_config(args)
    assert (config.copy.n_min, config.copy.max_weight) == (3, 0.9)
    assert config.copy.weight_per_token == CopyConfig().weight_per_token   # not given: the engine's default
    assert not config.guide.enabled and config.prompt.context == "local"


def test_a_span_probe_scores_the_second_copy_token_by_token():
    """An exact copier scores 1.0 and a model that repeats the current token scores ~0: the probe reads the
    positions that predict the second copy, no other."""
    import random

    import torch

    from assistant.lab.eval.recall import SPAN, _span_accuracy

    class Copier(torch.nn.Module):      # predicts the token `back` positions before the next one
        def __init__(self, back: int) -> None:
            super().__init__()
            self.back = back

        def forward(self, tokens: torch.Tensor, last: int) -> torch.Tensor:
            ids = tokens[0]
            source = torch.arange(len(ids)) + 1 - self.back
            logits = torch.nn.functional.one_hot(ids[source.clamp(min=0)], 50).float()
            return logits[None, -last:]

    rng = random.Random(1)
    filler = [rng.randrange(50) for _ in range(2000)]
    assert _span_accuracy(Copier(SPAN + 300), filler, 300, random.Random(0), bf16=False) == 1.0
    assert _span_accuracy(Copier(1), filler, 300, random.Random(0), bf16=False) < 0.1
    given = [rng.randrange(50) for _ in range(SPAN)]      # a span of its own (the random probe's) is copied too
    assert _span_accuracy(Copier(SPAN + 300), filler, 300, random.Random(0), bf16=False, span=given) == 1.0


def test_a_name_probe_reads_one_prefill_as_greedy_decoding_and_as_teacher_forcing_would():
    """The cached probe gives what two separate passes give: `generate`'s greedy tokens, and the top-1 token at each
    expected position of one forward over prompt + expected (the prompt's last position predicts the first)."""
    import torch

    from assistant.engine.decode import generate
    from assistant.lab.eval.recall import _answer_probe
    from model.config import ModelConfig
    from model.model import RustleLM

    torch.manual_seed(0)
    config = ModelConfig(vocab_size=512, d_model=32, n_heads=2, n_kv_heads=1, head_dim=16, mlp_hidden=64,
                         layer_pattern=("gdn", "swa", "lql"), window=16, lql_dim=16, lql_heads=1, gdn_heads=2,
                         gdn_head_dim=16, chunk_size=16)
    model = RustleLM(config).eval()
    prompt = torch.randint(0, 512, (100,)).tolist()
    with torch.no_grad():
        expected = list(generate(model, prompt, max_new_tokens=3)) + [7, 8]   # its own first three, then two given
        greedy, predicted = _answer_probe(model, prompt, expected, new_tokens=4, bf16=False)
        logits = model(torch.tensor([prompt + expected]))[0]
    assert greedy == list(generate(model, prompt, max_new_tokens=4))
    assert predicted == logits[len(prompt) - 1:-1].argmax(-1).tolist()
    assert predicted[:3] == expected[:3]
