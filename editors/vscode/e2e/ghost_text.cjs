// Drives code-server in headless Chromium as a user would: open a file of the workspace, retype the start of a
// line, wait for ghost text, press Tab. Prints one JSON line: the ghost text, the line after Tab, timings.
// Env: RUSTLE_E2E_URL (code-server, with ?folder=), RUSTLE_E2E_FILE (file name for Quick Open),
// RUSTLE_E2E_LINE (1-based), RUSTLE_E2E_TYPE (what to type after the line's indentation), CHROMIUM.
// puppeteer-core comes from NODE_PATH (installed by install.sh outside the repository).
const puppeteer = require("puppeteer-core");

const env = (name) => {
  if (!process.env[name]) throw new Error(`${name} is not set`);
  return process.env[name];
};

async function statusOf(page) {
  return page.$$eval(".statusbar-item", (items) => {
    const item = items.find((i) => i.textContent.includes("Rustle"));
    if (!item) return null;
    return { spinning: !!item.querySelector(".codicon-modifier-spin"), label: item.getAttribute("aria-label") ?? "" };
  });
}

async function main() {
  const typed = env("RUSTLE_E2E_TYPE");
  const browser = await puppeteer.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
      "--disable-sync", "--no-first-run", "--window-size=1400,900"],
    defaultViewport: { width: 1400, height: 900 },
  });
  const started = Date.now();
  try {
    const page = await browser.newPage();
    await page.goto(env("RUSTLE_E2E_URL"), { waitUntil: "domcontentloaded" });
    await page.waitForSelector(".monaco-workbench", { timeout: 60000 });
    await page.waitForSelector(".statusbar", { timeout: 60000 });

    await page.keyboard.down("Control");
    await page.keyboard.press("p");
    await page.keyboard.up("Control");
    await page.waitForSelector(".quick-input-widget input", { visible: true, timeout: 30000 });
    await page.keyboard.type(env("RUSTLE_E2E_FILE"));
    await page.waitForSelector(".quick-input-list .monaco-list-row", { timeout: 30000 });
    await page.keyboard.press("Enter");
    await page.waitForSelector(".monaco-editor .view-lines .view-line", { timeout: 30000 });

    // The extension activates on a Rust file; wait until its server has loaded the model and indexed.
    let status = null;
    const done = (s) => s && !s.spinning && /files|failed|no workspace/.test(s.label);  // the indexing's end
    for (let i = 0; i < 1200 && !done(status); i++) {
      await new Promise((r) => setTimeout(r, 100));
      status = await statusOf(page);
    }
    if (!done(status)) throw new Error(`Rustle never became ready: ${JSON.stringify(status)}`);
    const ready = Date.now();

    await page.keyboard.down("Control");
    await page.keyboard.press("g");
    await page.keyboard.up("Control");
    await page.waitForSelector(".quick-input-widget input", { visible: true });
    await page.keyboard.type(env("RUSTLE_E2E_LINE"));
    await page.keyboard.press("Enter");
    await page.keyboard.press("End");
    await page.keyboard.down("Shift");
    await page.keyboard.press("Home");        // to the first non-blank character: the indentation stays
    await page.keyboard.up("Shift");
    await page.keyboard.press("Backspace");
    await page.keyboard.type(typed, { delay: 30 });
    const typedAt = Date.now();

    // Generous: a loaded machine (CI beside a training run) can take tens of seconds for the first request.
    await page.waitForSelector(".ghost-text-decoration", { timeout: 120000 });
    const shown = Date.now();
    // The rest of this line is a run of decorated spans (one per syntax token); further lines, if any,
    // are drawn below it as `.ghost-text` view zones.
    const ghost = await page.$$eval(".ghost-text-decoration",
      (nodes) => nodes.map((n) => n.textContent.replace(/\u00a0/g, " ")).join(""));
    const ghostLines = await page.$$eval(".ghost-text .view-line",
      (nodes) => nodes.map((n) => n.textContent.replace(/\u00a0/g, " ")));
    await page.keyboard.press("Tab");
    await new Promise((r) => setTimeout(r, 500));
    const visible = await page.$$(".ghost-text-decoration");
    const lines = await page.$$eval(".monaco-editor .view-lines .view-line",
      (nodes) => nodes.map((n) => ({ top: parseFloat(n.style.top), text: n.textContent.replace(/\u00a0/g, " ") })));
    lines.sort((a, b) => a.top - b.top);
    console.log(JSON.stringify({
      ghost, ghostLines, status, after: lines.map((l) => l.text), ghostAfterTab: visible.length,
      readyMs: ready - started, ghostMs: shown - typedAt,
    }));
  } finally {
    await browser.close();
  }
}

main().catch((err) => {
  console.error(err.stack || String(err));
  process.exit(1);
});
