-- Keystroke-to-ghost-text latency from a real Neovim: type a line of a file one character at a time
-- and time each keystroke until the plugin draws a suggestion at the new cursor. Writes JSON to
-- $RUSTLE_OUT. Run by `rustle bench nvim` (assistant/bench/nvim.py).
local out, file = os.getenv("RUSTLE_OUT"), os.getenv("RUSTLE_FILE")
local lines_to_type = vim.json.decode(os.getenv("RUSTLE_LINES"))   -- 1-based line numbers
local rustle = require("rustle")
rustle.setup({ cmd = vim.json.decode(os.getenv("RUSTLE_CMD")), debounce_ms = tonumber(os.getenv("RUSTLE_DEBOUNCE")),
  settings = { debounceMs = 0 } })
vim.cmd("edit " .. vim.fn.fnameescape(file))
local buf = vim.api.nvim_get_current_buf()
local result = { latencies_ms = {}, new_line_ms = {}, misses = 0, first_ms = nil }  -- first: cold start

local function finish(message)
  result.message = message
  local f = io.open(out, "w")
  f:write(vim.json.encode(result))
  f:close()
  vim.cmd("qa!")
end

local queue = {}          -- characters still to type, with the line they belong to
local line_index, original, started = 0, nil, nil
local state, waited = "boot", 0
local started_boot = vim.uv.now()

local function next_line()
  line_index = line_index + 1
  local n = lines_to_type[line_index]
  if n == nil then return false end
  original = vim.api.nvim_buf_get_lines(buf, n - 1, n, false)[1]
  local indent = original:match("^%s*")
  vim.cmd("stopinsert")
  vim.api.nvim_buf_set_lines(buf, n - 1, n, false, { indent })
  vim.api.nvim_win_set_cursor(0, { n, #indent })
  queue = {}
  for ch in original:sub(#indent + 1):gmatch(".") do table.insert(queue, ch) end
  return true
end

local timer = vim.uv.new_timer()
timer:start(20, 10, vim.schedule_wrap(function()
  local client = vim.lsp.get_clients({ bufnr = buf, name = "rustle" })[1]
  if state == "boot" then
    if vim.uv.now() - started_boot > 300000 then timer:stop(); finish("server did not start") return end
    if client and client.initialized then
      next_line()
      vim.api.nvim_feedkeys("A", "n", false)
      state, started = "warming", vim.uv.hrtime()
    end
  elseif state == "warming" then  -- the first suggestion includes indexing and the repository prefill
    if rustle.suggestion(buf) then
      local ms = (vim.uv.hrtime() - started) / 1e6
      if result.first_ms == nil then result.first_ms = ms else table.insert(result.new_line_ms, ms) end
      state = "idle"
    elseif (vim.uv.hrtime() - started) / 1e6 > 300000 then timer:stop(); finish("no first suggestion") end
  elseif state == "idle" then
    if #queue == 0 then
      if not next_line() then timer:stop(); finish("ok") return end
      vim.api.nvim_feedkeys("A", "n", false)
      state, started = "warming", vim.uv.hrtime()
      return
    end
    local ch = table.remove(queue, 1)
    started, state = vim.uv.hrtime(), "typing"
    vim.api.nvim_feedkeys(ch, "n", false)
  elseif state == "typing" then
    local s = rustle.suggestion(buf)
    local row, col = unpack(vim.api.nvim_win_get_cursor(0))
    local elapsed = (vim.uv.hrtime() - started) / 1e6
    if s and s.row == row - 1 and s.col == col then
      table.insert(result.latencies_ms, elapsed)
      state = "idle"
    elseif elapsed > 5000 then
      result.misses = result.misses + 1
      state = "idle"
    end
  end
end))
