"""GET/HEAD /media/<token>: serves reply audio stored by LocalStorage to Twilio.

The token is the stored file's name, signed and time-stamped (app/clients/storage.py):
a forged or altered token is 403, an expired one 410, a missing file 404. The token only
ever decodes to names matching storage.KEY_PATTERN, so nothing outside the media folder
can be reached. Twilio reads the Content-Type to decide how WhatsApp shows the audio
(audio/ogg renders as a voice message), and may send HEAD first.
"""
from __future__ import annotations

from flask import Blueprint, Response, abort, send_file

from app.clients.storage import LocalStorage, MediaTokenExpired, MediaTokenInvalid
from app.services import current_services

bp = Blueprint("media", __name__)

# itsdangerous tokens for our 36-character keys are ~80 characters; anything far longer is junk.
MAX_TOKEN_LENGTH = 512


def _local_storage() -> LocalStorage:
    storage = current_services().storage
    if not isinstance(storage, LocalStorage):
        abort(404)  # GCS serves its own URLs; this route has nothing to serve
    return storage


@bp.route("/media/<token>", methods=["GET", "HEAD"])
def serve_media(token: str) -> Response:
    if len(token) > MAX_TOKEN_LENGTH:
        abort(403)
    storage = _local_storage()
    try:
        key = storage.verify_token(token)
    except MediaTokenExpired:
        abort(410)
    except MediaTokenInvalid:
        abort(403)
    path = storage.path_for(key)
    if path is None:
        abort(404)  # signed by us but already cleaned up
    response = send_file(path, mimetype=storage.content_type_for(key), conditional=True,
                         etag=True, max_age=storage.ttl_seconds)
    response.headers["Cache-Control"] = f"private, max-age={storage.ttl_seconds}"
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response
