// The league page's connection indicator, and a refresh whenever the stream (re)opens:
// events sent while the browser was not connected are not replayed, the page is re-read.
// The badge follows the server's feed as well (``event: feed``, live/feed.py): "live" while
// this web process receives the league's events, "feed down" while it does not (the bus
// unreachable or restarting); the page is re-read when the feed is live again.
(function () {
  function status(text, cls) {
    var el = document.getElementById("live-status");
    if (el) { el.textContent = text; el.className = "status " + cls; }
  }
  function refresh() {
    if (window.htmx) { htmx.trigger("#league", "refresh"); }
  }
  var feed = null;
  function onFeed(event) {
    var was = feed;
    feed = event.data;
    if (feed === "live") {
      status("live", "on");
      if (was === "down") { refresh(); }
    } else {
      status("feed down", "off");
    }
  }
  // htmx listens for "feed" from the moment the stream is created (the hidden #live-feed has
  // sse-swap="feed"), so the state the server sends first is never missed; no swap happens.
  document.addEventListener("htmx:sseBeforeMessage", function (event) {
    if (event.target && event.target.id === "live-feed") {
      event.preventDefault();
      onFeed(event.detail);
    }
  });
  document.addEventListener("htmx:sseOpen", refresh);
  document.addEventListener("htmx:sseError", function () { feed = null; status("reconnecting…", "off"); });
  document.addEventListener("htmx:sseMessage", function () {
    var items = document.querySelectorAll("#ticker li");
    for (var i = 12; i < items.length; i++) { items[i].remove(); }
    var quiet = document.querySelector("#ticker li.quiet");
    if (quiet && items.length > 1) { quiet.remove(); }
  });
})();
