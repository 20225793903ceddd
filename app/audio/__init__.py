"""Audio: the table of formats (``formats``) and the FFmpeg conversions and silence check (``ffmpeg``)."""
