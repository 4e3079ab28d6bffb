"""`rustle chat` driven in a real terminal (tmux) and `rustle query` as a script runs it, on a fixture crate."""
import json
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from assistant.chat.session import READING

ROOT = Path(__file__).resolve().parent.parent
SHOP = ROOT / "tests" / "fixtures" / "shop"
RUSTLE = Path(sys.executable).parent / "rustle"
PROMPT = "rustle> "

needs_tmux = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")


class Terminal:
    """A program in a detached tmux pane: keys in, the screen (with its scrollback) out."""

    def __init__(self, command: list[str], env: dict[str, str]) -> None:
        self.name = f"rustle-{uuid.uuid4().hex[:8]}"
        exports = " ".join(f"{k}={v}" for k, v in env.items())
        subprocess.run(["tmux", "new-session", "-d", "-s", self.name, "-x", "220", "-y", "60",
                        f"env {exports} {' '.join(command)}; sleep 600"], check=True)

    def send(self, *keys: str) -> None:
        subprocess.run(["tmux", "send-keys", "-t", self.name, *keys], check=True)

    def screen(self) -> str:
        return subprocess.run(["tmux", "capture-pane", "-p", "-J", "-S", "-5000", "-t", self.name],
                              capture_output=True, text=True, check=True).stdout

    def wait_for_prompt(self, count: int, timeout: float = 300) -> str:
        """The screen once `count` prompts are on it (the program is waiting for input again)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            screen = self.screen()
            if screen.count(PROMPT) >= count:
                return screen
            time.sleep(0.2)
        raise AssertionError(f"no prompt #{count} within {timeout} s:\n{self.screen()}")

    def wait_for(self, text: str, after: str, timeout: float = 60) -> None:
        """Return once `text` is on the screen after the last `after`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            screen = self.screen()
            if after in screen and text in screen[screen.rindex(after):]:
                return
            time.sleep(0.05)
        raise AssertionError(f"no {text!r} after {after!r} within {timeout} s:\n{self.screen()}")

    def ask(self, line: str, prompts: int) -> str:
        """Type `line` and Enter; the screen part after it, once the next prompt is there."""
        self.send(line, "Enter")
        screen = self.wait_for_prompt(prompts + 1)
        return screen[screen.rindex(PROMPT + line):]

    def close(self) -> None:
        subprocess.run(["tmux", "kill-session", "-t", self.name], capture_output=True)


@pytest.fixture
def shop(tmp_path) -> tuple[Path, dict[str, str]]:
    workspace = tmp_path / "shop"
    shutil.copytree(SHOP, workspace)
    for age, name in enumerate(["report.rs", "inventory.rs", "item.rs", "lib.rs"]):   # the context's file order
        os.utime(workspace / "src" / name, (1_700_000_000 - 60 * age, 1_700_000_000 - 60 * age))
    return workspace, {"XDG_CACHE_HOME": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1", "TERM": "xterm-256color",
                       "COLUMNS": "220"}


def query(workspace: Path, env: dict[str, str], text: str, check: int = 0) -> list[dict]:
    proc = subprocess.run([str(RUSTLE), "query", str(workspace), text, "--json"], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=300)
    assert proc.returncode == check, proc.stdout + proc.stderr
    return [json.loads(line) for line in proc.stdout.splitlines()]


def test_query_answers_each_kind_with_locations(shop):
    workspace, env = shop
    assert [(h["path"], h["line"], h["kind"]) for h in query(workspace, env, "def Inventory")] == [
        ("src/inventory.rs", 5, "struct"), ("src/inventory.rs", 9, "impl"), ("src/inventory.rs", 25, "impl")]
    refs = query(workspace, env, "refs add_item")
    assert [(h["path"], h["line"]) for h in refs] == [("src/report.rs", 13)]
    assert refs[0]["signature"] == "inventory.add_item(item);"
    impls = query(workspace, env, "impls Priced")
    assert [(h["path"], h["line"], h["name"]) for h in impls] == [("src/inventory.rs", 25, "Inventory"),
                                                                  ("src/item.rs", 13, "Item")]
    assert [h["name"] for h in query(workspace, env, "outline src/report.rs")] == ["summary", "stocked"]
    assert {(h["name"], h["path"]) for h in query(workspace, env, "tree")} == {
        ("crate", "src/lib.rs"), ("crate::inventory", "src/inventory.rs"), ("crate::item", "src/item.rs"),
        ("crate::report", "src/report.rs")}
    assert query(workspace, env, "find fmtdol")[0]["name"] == "format_dollars"
    assert query(workspace, env, "file src/lib.rs")[0]["signature"] == "pub mod item;"


def test_query_errors_are_messages(shop, tmp_path):
    workspace, env = shop
    for text in ("outline ../../../etc/passwd", "what Inventory", "refs"):
        proc = subprocess.run([str(RUSTLE), "query", str(workspace), text], capture_output=True, text=True,
                              env={**os.environ, **env}, timeout=300)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr + proc.stdout, (text, proc.stderr)
    proc = subprocess.run([str(RUSTLE), "chat", str(tmp_path / "missing")], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=300)
    assert proc.returncode == 2 and "not a folder" in proc.stdout
    (tmp_path / "empty").mkdir()
    proc = subprocess.run([str(RUSTLE), "chat", str(tmp_path / "empty")], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=300)
    assert proc.returncode == 2 and "no Rust files" in proc.stdout
    proc = subprocess.run([str(RUSTLE), "chat", str(workspace), "--model", str(workspace)], capture_output=True,
                          text=True, env={**os.environ, **env}, timeout=300)
    assert proc.returncode == 2 and "not a Hugging Face model folder" in proc.stdout


def _defined_elsewhere(workspace: Path, env: dict[str, str], placed_in: str, code: str) -> set[str]:
    """Names in `code` that the index defines only in files other than `placed_in`, absent from that file."""
    words = r"\b[A-Za-z_]\w*\b"
    names = set(re.findall(words, code)) - set(re.findall(words, (workspace / placed_in).read_text()))
    return {n for n in names if (hits := _exact(workspace, env, n)) and all(h["path"] != placed_in for h in hits)}


def _exact(workspace: Path, env: dict[str, str], name: str) -> list[dict]:
    proc = subprocess.run([str(RUSTLE), "query", str(workspace), f"def {name}", "--json"], capture_output=True,
                          text=True, env={**os.environ, **env}, timeout=300)
    return [h for h in map(json.loads, proc.stdout.splitlines()) if h["name"].split("::")[-1] == name]


@needs_tmux
@pytest.mark.slow
def test_chat_in_a_terminal_answers_commands_generates_code_and_survives_ctrl_c(shop):
    workspace, env = shop
    term = Terminal([str(RUSTLE), "chat", str(workspace)], env)
    try:
        prompts = 1
        term.wait_for_prompt(prompts)
        expected = {
            "/def Inventory": ["src/inventory.rs:5", "pub struct Inventory"],
            "/refs format_dollars": ["src/report.rs:6", "format!(\"stock worth {}\""],
            "/impls Priced": ["src/inventory.rs:25", "src/item.rs:13"],
            "/outline src/item.rs": ["src/item.rs:3", "src/item.rs:20", "format_dollars"],
            "/tree": ["crate::inventory", "src/report.rs"],
            "/find stckd": ["src/report.rs:10", "stocked"],
            "/file src/lib.rs": ["pub use inventory::Inventory;"],
            "who calls total_cents?": ["src/report.rs:6", "src/inventory.rs:27"],
            "what implements Priced?": ["src/item.rs:13"],
            "how does pricing work?": ["No chat model is loaded", "price_cents"],
            "/help": ["/impls TRAIT", "/gen WHAT"],
            "/def": ["'def' needs a NAME"],
        }
        for line, wanted in expected.items():
            out = term.ask(line, prompts)
            prompts += 1
            for text in wanted:
                assert text in out, (line, text, out)
        out = term.ask("/gen the price of the stock formatted in dollars", prompts)   # our model, repository in context
        prompts += 1
        code = out[out.index("pub fn"):out.rindex(PROMPT)]
        assert "/// The price of the stock formatted in dollars" in out
        assert _defined_elsewhere(workspace, env, "src/lib.rs", code.split("\n", 1)[1]), code
        for i in range(3000):             # another file grows: the next code request waits for its prefill
            (workspace / "src" / "item.rs").open("a").write(f"\npub fn extra_{i}(x: u64) -> u64 {{ x * {i} + 1 }}\n")
        term.send("/complete src/report.rs:6", "Enter")
        term.wait_for(READING[:40], after="/complete")   # Ctrl-C while it reads (~60K new tokens), on any CPU
        term.send("C-c")
        screen = term.wait_for_prompt(prompts + 1)
        prompts += 1
        assert "^C: stopped" in screen[screen.rindex("/complete"):]
        assert "src/inventory.rs:5" in term.ask("/def Inventory", prompts)    # the conversation goes on
        prompts += 1
        term.send("Up")                                          # history: the last line comes back
        time.sleep(0.5)
        assert term.screen().rstrip().endswith(PROMPT + "/def Inventory")
        term.send("C-u", "/outline src/rep", "Tab")                  # tab completion: no path names, so…
        term.send("C-u", "/ref", "Tab", "format_d", "Tab")           # …commands and symbol names
        time.sleep(0.5)
        assert term.screen().rstrip().endswith(PROMPT + "/refs format_dollars")
    finally:
        term.close()


def _tiny_chat_model(out: Path) -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from tokenizer import DEFAULT_TOKENIZER

    tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(DEFAULT_TOKENIZER / "tokenizer.json"),
                                        eos_token="<|endoftext|>")
    tokenizer.chat_template = ("{% for m in messages %}<|file_sep|>{{ m['role'] }}\n{{ m['content'] }}\n"
                               "{% endfor %}{% if add_generation_prompt %}<|file_sep|>assistant\n{% endif %}")
    tokenizer.save_pretrained(out)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=4096)
    LlamaForCausalLM(config).save_pretrained(out)
    return out


@needs_tmux
def test_chat_with_a_local_hugging_face_chat_model_streams_an_answer_from_retrieved_definitions(shop, tmp_path):
    workspace, env = shop
    model = _tiny_chat_model(tmp_path / "tiny-chat")
    term = Terminal([str(RUSTLE), "chat", str(workspace), "--model", str(model)], env)
    try:
        screen = term.wait_for_prompt(1)
        assert "chat model tiny-chat" in screen
        out = term.ask("how is the stock summary formatted?", 1)
        assert "src/report.rs:5" in out and "No chat model" not in out     # retrieved, then answered
        assert out.split("tiny-chat:", 1)[1].replace(PROMPT, "").strip(), out
    finally:
        term.close()
