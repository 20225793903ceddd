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

# ---- trust (app/pipeline/gate.py) -------------------------------------------------------------
OPTED_OUT = (
    "Pronto, você não vai mais receber mensagens minhas por aqui. "
    "Se quiser voltar a conversar, é só mandar VOLTAR."
)
OPTED_IN = "Que bom ter você de volta! Pode mandar sua pergunta quando quiser."
ERASURE_REQUESTED = (
    "Recebi seu pedido para apagar seus dados. Nossa equipe vai tratar o pedido em até 15 dias, "
    "como prevê a LGPD, e apagar suas mensagens, áudios e contatos que você deixou aqui. "
    "Se você continuar conversando comigo antes disso, as novas mensagens também serão apagadas."
)
LIMIT_NOTICES = {
    "messages_per_minute": (
        "Recebi muitas mensagens suas em menos de um minuto. Para manter o atendimento bom para "
        "todos, as próximas deste minuto ficam sem resposta — pode mandar de novo daqui a pouco?"
    ),
    "messages_per_day": (
        "Você chegou ao limite de mensagens de hoje. Amanhã eu volto a responder por aqui. "
        "Obrigado pela compreensão!"
    ),
    "audio_seconds_per_day": (
        "Você chegou ao limite de áudios de hoje. Se puder, me mande sua pergunta por escrito."
    ),
    "ai_calls_per_day": (
        "Estou com muita procura hoje e não consigo responder agora. "
        "Nossa equipe vai ver sua mensagem. Obrigado pela paciência!"
    ),
}
