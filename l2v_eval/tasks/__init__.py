"""Task specs (presets, types, names), the paper's instructions, local task data and the bundled l2v-mini suite."""
