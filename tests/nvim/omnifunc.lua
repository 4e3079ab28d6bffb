-- Headless run on a Neovim older than 0.11 (Debian's 0.7): the plugin falls back to LSP completion, so
-- <C-x><C-o> in insert mode lists our model's suggestion; <C-y> inserts it. Driven by tests/test_nvim.py.
local h = dofile(debug.getinfo(1, "S").source:sub(2):match("(.*/)") .. "harness.lua")
local result = h.result

vim.o.completeopt = "menuone,noinsert"  -- show the menu for a single match; <C-y> inserts it
require("rustle").setup({ cmd = h.cmd })
local buf, line = h.open(), h.line
result.omnifunc = vim.bo[buf].omnifunc

local loop = h.loop
local deadline, stage = loop.now() + 120000, "start"
local timer = loop.new_timer()
timer:start(50, 50, vim.schedule_wrap(function()
  if loop.now() > deadline then timer:stop(); h.finish("timed out at stage " .. stage) return end
  local client = vim.lsp.buf_get_clients(buf)[1]
  if stage == "start" and client and client.initialized then
    stage = "completing"
    vim.api.nvim_feedkeys(vim.api.nvim_replace_termcodes("A<C-x><C-o>", true, false, true), "n", false)
  elseif stage == "completing" and vim.fn.pumvisible() == 1 then
    result.items = vim.tbl_map(function(item) return item.word end, vim.fn.complete_info({ "items" }).items)
    stage = "accepting"
    vim.api.nvim_feedkeys(vim.api.nvim_replace_termcodes("<C-y><Esc>", true, false, true), "n", false)
  elseif stage == "accepting" and vim.fn.mode() == "n" then
    result.line = vim.api.nvim_buf_get_lines(buf, line - 1, line, false)[1]
    timer:stop()
    h.finish("ok")
  end
end))
