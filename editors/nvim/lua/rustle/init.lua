-- Rustle for Neovim: ghost text from `rustle serve` while typing.
-- Neovim 0.11: requests textDocument/inlineCompletion itself (debounced) and draws extmarks
-- (virt_text for the first line, virt_lines for the rest). Tab accepts, <C-]> dismisses,
-- <M-Right> accepts a word, <M-Down> a line. Older versions fall back to LSP completion (omnifunc).
local M = {}

local ns = vim.api.nvim_create_namespace("rustle")

-- Rustle's own messages, as lsp/protocol.py defines them (tests/test_protocol.py keeps the two in step).
-- Both carry { uri, text, position = { line, character } } and, for a partial accept, acceptedText.
local protocol = { ACCEPT = "rustle/didAccept", REJECT = "rustle/didReject" }

M.config = {
  cmd = { "rustle", "serve" },
  filetypes = { "rust" },
  debounce_ms = 60,
  settings = {},            -- sent as initializationOptions.rustle (model, maxTokens, multiline, context)
  keymaps = { accept = "<Tab>", dismiss = "<C-]>", accept_word = "<M-Right>", accept_line = "<M-Down>" },
}

local buffers = {}          -- buf -> { timer, request_id, suggestion = { text, row, col } }

local function client_for(buf)
  return vim.lsp.get_clients({ bufnr = buf, name = "rustle" })[1]
end

function M.clear(buf)
  vim.api.nvim_buf_clear_namespace(buf, ns, 0, -1)
  if buffers[buf] then buffers[buf].suggestion = nil end
end

function M.suggestion(buf)
  return buffers[buf or vim.api.nvim_get_current_buf()] and buffers[buf or vim.api.nvim_get_current_buf()].suggestion
end

function M.show(buf, text, row, col)
  M.clear(buf)
  if text == nil or text == "" then return end
  local lines = vim.split(text, "\n", { plain = true })
  local opts = { virt_text = { { lines[1], "Comment" } }, virt_text_pos = "inline", hl_mode = "combine" }
  if #lines > 1 then
    opts.virt_lines = {}
    for i = 2, #lines do table.insert(opts.virt_lines, { { lines[i], "Comment" } }) end
  end
  vim.api.nvim_buf_set_extmark(buf, ns, row, col, opts)
  buffers[buf].suggestion = { text = text, row = row, col = col }
end

local function cursor(buf)
  local win = vim.fn.bufwinid(buf)
  if win == -1 then return nil end
  local pos = vim.api.nvim_win_get_cursor(win)
  return pos[1] - 1, pos[2], win
end

function M.request(buf)
  local client = client_for(buf)
  local row, col, win = cursor(buf)
  if client == nil or row == nil then return end
  local state = buffers[buf]
  if state.request_id then client:cancel_request(state.request_id) end
  local params = vim.lsp.util.make_position_params(win, client.offset_encoding)
  params.context = { triggerKind = 2 }
  local ok, id = client:request("textDocument/inlineCompletion", params, function(err, result)
    state.request_id = nil
    local now_row, now_col = cursor(buf)
    if err or result == nil or now_row ~= row or now_col ~= col or vim.fn.mode() ~= "i" then return end
    local items = result.items or result
    if items[1] then M.show(buf, items[1].insertText, row, col) else M.clear(buf) end
  end, buf)
  if ok then state.request_id = id end
end

function M.schedule(buf)
  local state = buffers[buf]
  if state == nil then return end
  M.clear(buf)
  state.timer:stop()
  state.timer:start(M.config.debounce_ms, 0, vim.schedule_wrap(function() M.request(buf) end))
end

local function take(text, how)
  if how == "word" then
    return text:match("^%s*[%w_]+") or text:match("^%s*[^%w_%s]+") or text
  elseif how == "line" then
    local line = text:match("^[^\n]*\n") or text
    return line
  end
  return text
end

-- Accept the suggestion (all of it, a word or a line); false when there is none.
function M.accept(buf, how)
  buf = buf or vim.api.nvim_get_current_buf()
  local s = M.suggestion(buf)
  if s == nil then return false end
  local part = take(s.text, how or "all")
  local lines = vim.split(part, "\n", { plain = true })
  vim.api.nvim_buf_set_text(buf, s.row, s.col, s.row, s.col, lines)
  local end_row = s.row + #lines - 1
  local end_col = (#lines == 1 and s.col or 0) + #lines[#lines]
  vim.api.nvim_win_set_cursor(vim.fn.bufwinid(buf), { end_row + 1, end_col })
  local client = client_for(buf)
  if client then
    client:notify(protocol.ACCEPT, { uri = vim.uri_from_bufnr(buf), text = s.text, acceptedText = part,
      position = { line = s.row, character = s.col } })
  end
  local rest = s.text:sub(#part + 1)
  if rest ~= "" then M.show(buf, rest, end_row, end_col) else M.clear(buf) end
  return true
end

function M.dismiss(buf)
  buf = buf or vim.api.nvim_get_current_buf()
  local s = M.suggestion(buf)
  if s == nil then return false end
  local client = client_for(buf)
  if client then
    client:notify(protocol.REJECT, { uri = vim.uri_from_bufnr(buf), text = s.text,
      position = { line = s.row, character = s.col } })
  end
  M.clear(buf)
  return true
end

local function map(buf, lhs, action, fallback)
  if not lhs then return end
  vim.keymap.set("i", lhs, function()
    if not action(buf) and fallback then
      vim.api.nvim_feedkeys(vim.api.nvim_replace_termcodes(lhs, true, false, true), "n", false)
    end
  end, { buffer = buf, desc = "rustle" })
end

local function root_of(buf)
  if vim.fs and vim.fs.root then return vim.fs.root(buf, { "Cargo.toml", ".git" }) end
  local cargo = vim.fn.findfile("Cargo.toml", vim.fn.fnamemodify(vim.api.nvim_buf_get_name(buf), ":p:h") .. ";")
  return cargo ~= "" and vim.fn.fnamemodify(cargo, ":p:h") or nil
end

local started = {}          -- root -> client id, for Neovim < 0.8 (no vim.lsp.start to reuse clients)

local function start(buf, root)
  local config = { name = "rustle", cmd = M.config.cmd, root_dir = root,
    init_options = { rustle = M.config.settings } }
  if vim.lsp.start then
    vim.lsp.start(config, { bufnr = buf })
    return
  end
  started[root] = started[root] or vim.lsp.start_client(config)
  vim.lsp.buf_attach_client(buf, started[root])
end

function M.attach(buf)
  if buffers[buf] then return end
  start(buf, root_of(buf) or vim.fn.getcwd())
  if vim.fn.has("nvim-0.11") == 0 then  -- no client:request API: plain LSP completion instead of ghost text
    buffers[buf] = {}
    vim.bo[buf].omnifunc = "v:lua.vim.lsp.omnifunc"
    return
  end
  buffers[buf] = { timer = vim.uv.new_timer() }
  local group = vim.api.nvim_create_augroup("rustle_" .. buf, { clear = true })
  vim.api.nvim_create_autocmd({ "TextChangedI", "InsertEnter" }, { group = group, buffer = buf,
    callback = function() M.schedule(buf) end })
  vim.api.nvim_create_autocmd({ "InsertLeave", "BufLeave" }, { group = group, buffer = buf,
    callback = function() M.clear(buf) end })
  vim.api.nvim_create_autocmd("BufWipeout", { group = group, buffer = buf, callback = function()
    buffers[buf].timer:close()
    buffers[buf] = nil
  end })
  local keys = M.config.keymaps
  map(buf, keys.accept, function(b) return M.accept(b, "all") end, true)
  map(buf, keys.dismiss, M.dismiss, true)
  map(buf, keys.accept_word, function(b) return M.accept(b, "word") end, true)
  map(buf, keys.accept_line, function(b) return M.accept(b, "line") end, true)
end

function M.setup(opts)
  M.config = vim.tbl_deep_extend("force", M.config, opts or {})
  vim.api.nvim_create_autocmd("FileType", { pattern = M.config.filetypes,
    callback = function(args) M.attach(args.buf) end })
end

return M
