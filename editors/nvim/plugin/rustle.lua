-- Loaded from the runtimepath; does nothing until `require("rustle").setup{}` is called from the user's config.
if vim.g.loaded_rustle then return end
vim.g.loaded_rustle = true
