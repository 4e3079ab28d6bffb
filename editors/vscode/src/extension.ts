// Rustle for VS Code: starts `rustle serve` over stdio; vscode-languageclient 11 turns the server's
// textDocument/inlineCompletion answers into ghost text (Tab accepts). A status-bar item shows indexing
// progress and the model; commands enable, disable and restart.
import * as vscode from "vscode";
import {
  LanguageClient, LanguageClientOptions, ServerOptions, State, TransportKind,
} from "vscode-languageclient/node";

// Rustle's own messages, as lsp/protocol.py defines them (tests/test_protocol.py keeps the two in step).
const STATUS = "rustle/status";
interface Status { state: "begin" | "report" | "ready" | "failed"; message: string; model: string }

let client: LanguageClient | undefined;
let status: vscode.StatusBarItem;

function settings(): Record<string, unknown> {
  const config = vscode.workspace.getConfiguration("rustle");
  const values: Record<string, unknown> = {
    maxTokens: config.get<number>("maxTokens"),
    debounceMs: config.get<number>("debounceMs"),
    multiline: config.get<boolean>("multiline"),
  };
  const model = config.get<string>("model");
  if (model) {
    values.model = model;
  }
  return { rustle: values };
}

function enabled(): boolean {
  return vscode.workspace.getConfiguration("rustle").get<boolean>("enabled", true);
}

function showStatus(text: string, tooltip: string): void {
  status.text = text;
  status.tooltip = tooltip;
  status.show();
}

async function start(): Promise<void> {
  const command = vscode.workspace.getConfiguration("rustle").get<string>("serverPath", "rustle");
  const serverOptions: ServerOptions = { command, args: ["serve"], transport: TransportKind.stdio };
  const clientOptions: LanguageClientOptions = {
    documentSelector: [{ scheme: "file", language: "rust" }],
    initializationOptions: settings(),
    synchronize: { fileEvents: vscode.workspace.createFileSystemWatcher("**/*.rs") },
    middleware: {
      // the enable/disable commands gate ghost text on the client side; the server keeps its state warm
      provideInlineCompletionItems: (document, position, context, token, next) =>
        enabled() ? next(document, position, context, token) : undefined,
      // VS Code draws ghost text; the server's classic completion item (for clients without inline support)
      // would repeat it in the suggest widget and take Tab from it
      provideCompletionItem: () => undefined,
    },
  };
  client = new LanguageClient("rustle", "Rustle", serverOptions, clientOptions);
  client.onDidChangeState((event) => {
    if (event.newState === State.Running) {
      showStatus("$(sync~spin) Rustle", "Rustle: server started");
    } else if (event.newState === State.Stopped) {
      showStatus("$(circle-slash) Rustle", "Rustle: server stopped");
    }
  });
  // The server's own status notification: vscode-languageclient shows its $/progress as a notification and
  // keeps the token to itself.
  client.onNotification(STATUS, (value: Status) => {
    if (value.state === "ready") {
      showStatus(enabled() ? "$(sparkle) Rustle" : "$(circle-slash) Rustle", `Rustle: ${value.message}`);
    } else if (value.state === "failed") {
      showStatus("$(error) Rustle", `Rustle: ${value.message}`);
    } else {
      showStatus("$(sync~spin) Rustle", `Rustle (${value.model}): ${value.message}`);
    }
  });
  showStatus("$(sync~spin) Rustle", "Rustle: starting");
  await client.start();
}

async function setEnabled(value: boolean): Promise<void> {
  await vscode.workspace.getConfiguration("rustle").update("enabled", value, vscode.ConfigurationTarget.Global);
  showStatus(value ? "$(sparkle) Rustle" : "$(circle-slash) Rustle", value ? "Rustle: enabled" : "Rustle: disabled");
}

export async function activate(context: vscode.ExtensionContext): Promise<void> {
  status = vscode.window.createStatusBarItem(vscode.StatusBarAlignment.Right, 100);
  status.command = "rustle.restart";
  context.subscriptions.push(
    status,
    vscode.commands.registerCommand("rustle.enable", () => setEnabled(true)),
    vscode.commands.registerCommand("rustle.disable", () => setEnabled(false)),
    vscode.commands.registerCommand("rustle.restart", async () => {
      await client?.stop();
      await start();
    }),
    vscode.workspace.onDidChangeConfiguration((event) => {
      if (event.affectsConfiguration("rustle") && client) {
        client.sendNotification("workspace/didChangeConfiguration", { settings: settings() });
      }
    }),
  );
  await start();
}

export async function deactivate(): Promise<void> {
  await client?.stop();
}
