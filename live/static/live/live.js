// The league page's connection indicator, and a refresh whenever the stream (re)opens:
// events sent while the browser was not connected are not replayed, the page is re-read.
(function () {
  function status(text, cls) {
    var el = document.getElementById("live-status");
    if (el) { el.textContent = text; el.className = "status " + cls; }
  }
  document.addEventListener("htmx:sseOpen", function () {
    status("live", "on");
    if (window.htmx) { htmx.trigger("#league", "refresh"); }
  });
  document.addEventListener("htmx:sseError", function () { status("reconnecting…", "off"); });
  document.addEventListener("htmx:sseMessage", function () {
    var items = document.querySelectorAll("#ticker li");
    for (var i = 12; i < items.length; i++) { items[i].remove(); }
    var quiet = document.querySelector("#ticker li.quiet");
    if (quiet && items.length > 1) { quiet.remove(); }
  });
})();
