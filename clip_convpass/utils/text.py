"""Class names as prompt text: the one place a name becomes what CLIP reads."""


def prompt_classname(name: str) -> str:
    """A class name as prompt text: "_" becomes a space ("great_white_shark" -> "great white shark"),
    as CoOp and Tip-Adapter do on every path. The one place every prompt gets its class names."""
    return name.replace("_", " ").strip()


def prompt_identity(name: str) -> str:
    """What CLIP's tokenizer sees of a class name in a prompt (it lower-cases and collapses whitespace): two
    names with the same identity get the same text embedding, so no prompt can tell them apart."""
    return " ".join(prompt_classname(name).lower().split())
