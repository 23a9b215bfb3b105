// meterlake dashboard: brings the page up to date without a reload. Every 10 s (while the
// tab is visible) it asks /live for the data's version; when the data changed, it fetches
// the same page's main part and swaps it in (and, if that came as it was while a rebuild
// runs, asks again 2 s later). No library, nothing from another origin.
(function () {
  "use strict";
  var main = document.getElementById("main");
  var checked = document.getElementById("checked");
  if (!main) return;
  var version = main.getAttribute("data-version");
  var busy = false;
  // Set when the server answered with the page as it was (a slow page is rebuilt behind
  // it): then ask again soon rather than at the next 10 s tick.
  var again = false, soon = 0;
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
            // At most 5 quick retries in a row (a rebuild that keeps failing waits for the
            // 10 s tick).
            again = shown !== live.version && soon < 5;
            soon = again ? soon + 1 : 0;
            stamp("updated with new data at " + new Date().toLocaleTimeString());
          });
        });
      })
      .catch(function () { stamp("could not reach the server; retrying"); })
      .then(function () {
        busy = false;
        if (again) {
          again = false;
          setTimeout(tick, 2000);
        }
      });
  }
  setInterval(tick, 10000);
  document.addEventListener("visibilitychange", tick);
})();
