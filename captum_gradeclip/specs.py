"""The model specs that :func:`captum_gradeclip.load` and the command line's ``--model`` accept, as their messages
list them. Plain data, without imports, so that the command line's help reads it without loading torch."""

from __future__ import annotations

#: The spec forms, as the errors and the ``--model`` help list them.
SPECS = "shapes | shapes:resnet | shapes:deep | hf:NAME_OR_PATH | open_clip:ARCH[:PRETRAINED] | openai:NAME"
