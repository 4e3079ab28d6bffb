"""Special tokens, in the StarCoder2 / Qwen2.5-Coder conventions; ids 0.. in this order in every vocabulary."""

ENDOFTEXT = "<|endoftext|>"
FIM_PREFIX = "<|fim_prefix|>"
FIM_MIDDLE = "<|fim_middle|>"
FIM_SUFFIX = "<|fim_suffix|>"
FILE_SEP = "<|file_sep|>"
REPO_NAME = "<|repo_name|>"
PAD = "<|pad|>"

SPECIAL_TOKENS = [ENDOFTEXT, FIM_PREFIX, FIM_MIDDLE, FIM_SUFFIX, FILE_SEP, REPO_NAME, PAD]
