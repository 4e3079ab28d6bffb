-- What the headless test scripts share: the test's inputs from the environment, the Rust file opened with
-- the line under test replaced by the typed text, and `finish`, which writes the result JSON and quits.
-- Works on Neovim 0.7 (no vim.json, no vim.uv) as well as 0.11.
local H = {
  out = os.getenv("RUSTLE_OUT"),
  line = tonumber(os.getenv("RUSTLE_LINE")),
  typed = os.getenv("RUSTLE_TYPED"),
  cmd = vim.fn.json_decode(os.getenv("RUSTLE_CMD")),
  loop = vim.uv or vim.loop,
  result = {},
}

function H.open()
  vim.cmd("edit " .. vim.fn.fnameescape(os.getenv("RUSTLE_FILE")))
  local buf = vim.api.nvim_get_current_buf()
  vim.api.nvim_buf_set_lines(buf, H.line - 1, H.line, false, { H.typed })
  vim.api.nvim_win_set_cursor(0, { H.line, 0 })
  return buf
end

function H.finish(message)
  H.result.message = message
  local f = io.open(H.out, "w")
  f:write(vim.fn.json_encode(H.result))
  f:close()
  vim.cmd("qa!")
end

return H
