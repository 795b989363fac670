"""A request's images: base64, the storage URL of one of the app's inputs, or a stored input id, to checked bytes.

Every image goes through ``deeptrain.images.read_checked_image`` (the intake the SDK and
search use), so its header is checked once here and it is decoded once, on the Predictor.
``deeptrain.services.inputs.read_input_url`` is the one rule for URLs. Errors name the
input (``inputs[k] (id ...)`` or ``query.image``), never a server path.
"""

from __future__ import annotations

import base64
import binascii

from deeptrain.errors import InvalidInput
from deeptrain.images import ImageLimits, read_checked_image
from deeptrain.services import inputs as input_service
from deeptrain.services.context import Context


def input_name(k: int, given_id: str | None) -> str:
    """How an error names the request's k-th input: its index, and the id the caller gave."""
    return f"inputs[{k}]" + (f" (id {given_id!r})" if given_id else "")


def _image_bytes(ctx: Context, app_id: str, image) -> bytes:
    """The bytes an ``ImageData``/``QueryImage`` names (exactly one of base64, url, input_id is set)."""
    if image.base64 is not None:
        try:
            return base64.b64decode(image.base64, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidInput("base64 is not valid base64") from None
    if image.url is not None:
        return input_service.read_input_url(ctx, app_id, image.url)
    return input_service.get_input_bytes(ctx, app_id, image.input_id)


def read_image(ctx: Context, app_id: str, image, where: str) -> bytes:
    """The header-checked bytes of an ``ImageData``/``QueryImage``; errors name ``where``."""
    return read_checked_image(lambda: _image_bytes(ctx, app_id, image), ImageLimits.of(ctx.settings), where)


def read_images(ctx: Context, app_id: str, inputs) -> tuple[list[bytes], list[str]]:
    """The checked bytes of each input of a request, and the names its errors use."""
    names = [input_name(k, inp.id) for k, inp in enumerate(inputs)]
    return [read_image(ctx, app_id, inp.data.image, name) for inp, name in zip(inputs, names)], names
