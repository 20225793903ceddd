"""The realtime speech-to-speech path: voice notes to PCM16 24 kHz, trimmed by voice activity
detection, answered by an OpenAI Realtime session (app/clients/openai_realtime.py), and the
PCM answer encoded back into a WhatsApp voice note."""
