"""Audio: the table of formats (``formats``), the FFmpeg conversions and silence check (``ffmpeg``), and PCM for the realtime path (``pcm``: 24 kHz decoding, voice-activity trim, OGG/Opus)."""
