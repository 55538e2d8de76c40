"""l2v: decoder-only LLMs as text encoders (the LLM2Vec recipe) on current transformers."""
from .bidirectional import is_bidirectional, make_bidirectional, set_bidirectional
from .encoder import LLM2Vec
from .errors import AdapterError, ModelLoadError
from .pooling import POOLING_MODES
from .st_model import load_sentence_transformer

__version__ = "0.1.0"
__all__ = ["LLM2Vec", "make_bidirectional", "set_bidirectional", "is_bidirectional", "POOLING_MODES",
           "ModelLoadError", "AdapterError", "load_sentence_transformer", "__version__"]
