/* Tally tracker, served at /s.js. No cookies; nothing is stored in the browser.
 * <script defer src="https://HOST/s.js" data-website-id="ID"></script>
 * data-api-host: where to send (default: this script's origin)
 * data-respect-dnt="false": count visitors who ask not to be tracked (default: respect DNT/GPC)
 * data-disabled="true": send nothing
 * API: tally.track(name, data), tally.identify(id), tally.reset(); also as window.sparklytics. */
(function (w, d) {
  var s = d.currentScript, n = navigator;
  if (!s) return;
  var attr = function (k) { return s.getAttribute("data-" + k); };
  var id = attr("website-id");
  if (!id) return;
  var host = (attr("api-host") || new URL(s.src, location.href).origin).replace(/\/+$/, "");
  var off = attr("disabled") === "true" ||
    (attr("respect-dnt") !== "false" &&
      (n.doNotTrack == "1" || w.doNotTrack == "1" || n.globalPrivacyControl === true));
  var visitor, last, ref = d.referrer || null;

  function send(type, name, data) {
    if (off) return;
    var e = {
      website_id: id, type: type, url: location.href, referrer: ref,
      screen_width: screen.width, screen_height: screen.height, language: n.language
    };
    if (name) e.event_name = name;
    if (data !== undefined) e.event_data = data;
    if (visitor) e.visitor_id = visitor;
    var body = JSON.stringify(e), url = host + "/e";
    // A text/plain beacon needs no CORS preflight and survives the page closing.
    if (!(n.sendBeacon && n.sendBeacon(url, body))) {
      fetch(url, { method: "POST", body: body, keepalive: true, credentials: "omit",
        headers: { "content-type": "text/plain" } }).catch(function () {});
    }
  }

  function pageview() {
    var here = location.pathname + location.search;
    if (here === last) return; // a hash change or a replaceState to the same page
    last = here;
    send("pageview");
    ref = location.href; // later views were referred by this page, not by the first referrer
  }

  ["pushState", "replaceState"].forEach(function (m) {
    var orig = history[m];
    history[m] = function () {
      var r = orig.apply(this, arguments);
      pageview();
      return r;
    };
  });
  w.addEventListener("popstate", pageview);

  d.addEventListener("click", function (ev) {
    var a = ev.target && ev.target.closest && ev.target.closest("a[href]");
    if (a && /^https?:$/.test(a.protocol) && a.host !== location.host) {
      send("event", "link_click", { url: a.href, outbound: true });
    }
  }, true);

  var api = {
    track: function (name, data) { if (name) send("event", String(name), data); },
    identify: function (v) { visitor = v ? String(v) : undefined; },
    reset: function () { visitor = undefined; }
  };
  w.tally = w.sparklytics = api;
  pageview();
})(window, document);
