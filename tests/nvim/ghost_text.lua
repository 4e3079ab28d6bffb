-- Headless end-to-end run: open a Rust file of a workspace, enter insert mode at the end of a line,
-- wait for ghost text, press Tab, and write what happened as JSON. Driven by tests/test_nvim.py.
local h = dofile(debug.getinfo(1, "S").source:sub(2):match("(.*/)") .. "harness.lua")
local rustle = require("rustle")
local result = h.result

rustle.setup({ cmd = h.cmd, debounce_ms = 20, settings = { maxTokens = 16, debounceMs = 10 } })
local buf, line = h.open(), h.line
result.filetype = vim.bo[buf].filetype

local started, deadline = nil, vim.uv.now() + 120000
local stage = "start"
local timer = vim.uv.new_timer()
timer:start(50, 50, vim.schedule_wrap(function()
  if vim.uv.now() > deadline then timer:stop(); h.finish("timed out at stage " .. stage) return end
  local client = vim.lsp.get_clients({ bufnr = buf, name = "rustle" })[1]
  if stage == "start" and client and client.initialized then
    stage, started = "typing", vim.uv.hrtime()
    vim.api.nvim_feedkeys("A", "n", false)
  elseif stage == "typing" and rustle.suggestion(buf) then
    result.latency_ms = (vim.uv.hrtime() - started) / 1e6
    result.suggestion = rustle.suggestion(buf).text
    result.extmarks = #vim.api.nvim_buf_get_extmarks(buf, vim.api.nvim_create_namespace("rustle"), 0, -1, {})
    stage = "accepting"
    vim.api.nvim_feedkeys(vim.api.nvim_replace_termcodes("<Tab>", true, false, true), "m", false)
  elseif stage == "accepting" and rustle.suggestion(buf) == nil then
    result.line = vim.api.nvim_buf_get_lines(buf, line - 1, line, false)[1]
    timer:stop()
    h.finish("ok")
  end
end))
