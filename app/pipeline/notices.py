"""The Portuguese sentences the bot says about a message it could not use as it came."""

NOT_AUDIO = (
    "Por enquanto eu entendo mensagens de texto e áudios de voz. "
    "Imagens, vídeos, documentos e figurinhas eu ainda não consigo abrir."
)
MEDIA_UNAVAILABLE = "Não consegui baixar o seu áudio. Pode mandar de novo?"
MEDIA_TOO_LARGE = "Esse arquivo é grande demais para mim. Pode mandar um áudio mais curto?"
AUDIO_UNREADABLE = "Não consegui ouvir seu áudio, pode mandar de novo?"
AUDIO_TOO_LONG = "Seu áudio ficou longo demais para mim (até {minutes} minutos). Pode mandar em partes?"
AUDIO_SILENT = "Não ouvi nada no seu áudio. Pode gravar de novo?"
TRANSCRIPTION_OFFLINE = (
    "Estou sem transcrição de áudio neste momento. Pode me mandar sua pergunta por escrito?"
)
HOLDING = "Recebi sua mensagem! Estou com uma instabilidade aqui, mas já te respondo."
APOLOGY = (
    "Desculpe, não consegui responder agora por um problema técnico. "
    "Nossa equipe já foi avisada — pode tentar de novo mais tarde?"
)
EMPTY_TURN = "Oi! Não recebi nenhum texto. Como posso te ajudar?"
