// meterlake dashboard: brings the page up to date without a reload. Every 10 s (while the
// tab is visible) it asks /live for the data's version; when the data changed, it fetches
// the same page's main part and swaps it in. No library, nothing from another origin.
(function () {
  "use strict";
  var main = document.getElementById("main");
  var checked = document.getElementById("checked");
  if (!main) return;
  var version = main.getAttribute("data-version");
  var busy = false;
  function stamp(text) {
    if (checked) checked.textContent = text;
  }
  function tick() {
    if (busy || document.hidden) return;
    busy = true;
    // The page's own query: /live answers for the same scope (?tenant=).
    fetch("/live" + window.location.search, { cache: "no-store", credentials: "same-origin" })
      .then(function (r) {
        if (r.status === 401) { window.location.reload(); throw new Error("signed out"); }
        return r.json();
      })
      .then(function (live) {
        if (live.version === version) {
          stamp("checked for new data at " + new Date().toLocaleTimeString());
          return null;
        }
        return fetch(window.location.href, {
          cache: "no-store",
          credentials: "same-origin",
          headers: { "X-Fragment": "1" }
        }).then(function (r) {
          if (!r.ok) return;
          var shown = r.headers.get("X-Data-Version") || live.version;
          return r.text().then(function (html) {
            main.innerHTML = html;
            // A large page may come as it was while it is rebuilt: ask again next time.
            version = shown;
            main.setAttribute("data-version", version);
            stamp("updated with new data at " + new Date().toLocaleTimeString());
          });
        });
      })
      .catch(function () { stamp("could not reach the server; retrying"); })
      .then(function () { busy = false; });
  }
  setInterval(tick, 10000);
  document.addEventListener("visibilitychange", tick);
})();
