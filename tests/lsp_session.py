"""The start of an editor session both pytest-lsp suites share: status notifications recorded, the bundled
workspace's folder opened, the quick settings the tests rely on."""
from pathlib import Path

from lsprotocol import types
from pytest_lsp import LanguageClient, client_capabilities


async def open_session(client: LanguageClient, workspace: Path) -> None:
    """Record `rustle/status` on `client.statuses` and initialize the server on `workspace` (debounce 20 ms)."""
    client.statuses = []
    client.feature("rustle/status")(lambda params: client.statuses.append(params))
    await client.initialize_session(types.InitializeParams(
        capabilities=client_capabilities("visual-studio-code"),
        workspace_folders=[types.WorkspaceFolder(uri=workspace.as_uri(), name=workspace.name)],
        initialization_options={"rustle": {"debounceMs": 20, "maxTokens": 24}}))
