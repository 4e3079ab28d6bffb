"""The editor plugins speak lsp/protocol.py: every `rustle/…` method they name is one of its constants, with
the value it has there, and the payload fields they read or send are its fields."""
import re
from dataclasses import fields
from pathlib import Path

from lsp import protocol

ROOT = Path(__file__).resolve().parents[1]
VSCODE = (ROOT / "editors" / "vscode" / "src" / "extension.ts").read_text()
NVIM = (ROOT / "editors" / "nvim" / "lua" / "rustle" / "init.lua").read_text()
METHODS = {name: value for name, value in vars(protocol).items() if isinstance(value, str) and name.isupper()}


def test_every_method_a_plugin_names_is_defined_once_with_the_servers_value():
    for source in (VSCODE, NVIM):
        literals = re.findall(r'"(rustle/[A-Za-z]+)"', source)
        assert literals, "the plugin names no method of ours"
        assert set(literals) <= set(METHODS.values())
        for literal in literals:  # declared once in the mirror block, used by name elsewhere
            name = next(n for n, v in METHODS.items() if v == literal)
            assert source.count(f'"{literal}"') == 1 and re.search(rf"\b{name}\s*=\s*\"{re.escape(literal)}\"", source)
            assert re.search(rf"\b(protocol\.)?{name}\b(?!\s*=)", source), f"{name} is declared but not used"


def test_payload_fields_match():
    status = re.search(r"interface Status \{([^}]*)\}", VSCODE).group(1)
    assert [m for m in re.findall(r"(\w+):", status)] == [f.name for f in fields(protocol.Status)]
    for call in re.findall(r"client:notify\(protocol\.\w+, \{(.*?)\}\)\n", NVIM, re.S):
        keys = set(re.findall(r"(\w+) =", call)) - {"line", "character"}
        assert keys <= {"uri", "text", "position", "acceptedText"}
        assert protocol.Feedback.from_json({k: {"line": 1, "character": 2} if k == "position" else "x"
                                            for k in keys}) is not None
    sent = protocol.Feedback.from_json({"uri": "file:///a.rs", "text": "foo()", "acceptedText": "foo",
                                        "position": {"line": 3, "character": 4}})
    assert sent == protocol.Feedback("file:///a.rs", "foo()", protocol.Position(3, 4), "foo")
    assert protocol.Feedback.from_json({"uri": "file:///a.rs"}) is None
