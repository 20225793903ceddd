/* The live inbox (/conversations): re-reads /conversations.json every few seconds and redraws
 * the cards, so a conversation that starts waiting for a person appears without a reload.
 * Built with DOM methods and textContent only: names and messages are never parsed as HTML. */
(function () {
  "use strict";

  var list = document.getElementById("inbox");
  if (!list) return;
  var url = list.getAttribute("data-poll-url");
  var seconds = parseInt(list.getAttribute("data-poll-seconds"), 10) || 4;
  var empty = document.getElementById("inbox-empty");
  var counter = document.getElementById("waiting-count");
  var timeFormat = new Intl.DateTimeFormat("pt-BR", {
    timeZone: "America/Sao_Paulo", day: "2-digit", month: "2-digit", hour: "2-digit", minute: "2-digit"
  });

  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = text;
    return node;
  }

  function when(iso) {
    if (!iso) return "";
    return timeFormat.format(new Date(iso)).replace(",", "");
  }

  function card(item) {
    var link = el("a", "inbox-item card text-decoration-none");
    if (item.handoff) link.classList.add("waiting");
    if (item.unread) link.classList.add("unread");
    link.href = item.url;
    link.setAttribute("data-user-id", String(item.id));
    var body = el("div", "card-body d-flex gap-2 align-items-start");
    var main = el("div", "flex-grow-1 inbox-main");
    var head = el("div", "d-flex flex-wrap align-items-center gap-2");
    if (item.unread) {
      var dot = el("span", "unread-dot");
      dot.title = "Mensagem nova";
      dot.setAttribute("aria-label", "Mensagem nova");
      head.appendChild(dot);
    }
    head.appendChild(el("strong", "inbox-name", item.name || "Sem nome"));
    if (item.channel === "simulator") head.appendChild(el("span", "badge text-bg-info", "simulador"));
    if (item.handoff) {
      head.appendChild(el("span", "badge text-bg-warning inbox-wait",
        item.handoff.waiting_since ? "aguardando há " + item.waited : "com a equipe"));
      if (item.handoff.operator) head.appendChild(el("span", "badge text-bg-secondary", item.handoff.operator));
    }
    main.appendChild(head);
    main.appendChild(el("div", "small text-body-secondary inbox-phone", item.phone));
    if (item.last_message) {
      var preview = el("div", "small inbox-preview");
      if (item.last_message.direction === "out") {
        preview.appendChild(el("span", "text-body-secondary", "Resposta: "));
      }
      preview.appendChild(document.createTextNode(item.last_message.preview));
      main.appendChild(preview);
    }
    body.appendChild(main);
    var time = el("time", "small text-body-secondary text-nowrap", when(item.last_activity_at));
    if (item.last_activity_at) time.setAttribute("datetime", item.last_activity_at);
    body.appendChild(time);
    link.appendChild(body);
    return link;
  }

  function render(data) {
    var cards = document.createDocumentFragment();
    data.conversations.forEach(function (item) { cards.appendChild(card(item)); });
    list.replaceChildren(cards);
    if (empty) empty.classList.toggle("d-none", data.conversations.length > 0);
    if (counter) {
      counter.textContent = data.waiting + " aguardando";
      counter.classList.toggle("d-none", !data.waiting);
    }
    list.setAttribute("data-updated", data.now || "");
  }

  function poll() {
    if (document.hidden) return;
    fetch(url, {headers: {"Accept": "application/json"}, credentials: "same-origin"})
      .then(function (response) {
        if (response.status === 401) { window.location.reload(); return null; }  // session ended
        return response.ok ? response.json() : null;
      })
      .then(function (data) { if (data) render(data); })
      .catch(function () { /* offline for a moment: the next poll tries again */ });
  }

  window.setInterval(poll, seconds * 1000);
  document.addEventListener("visibilitychange", poll);
})();
