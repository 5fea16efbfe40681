// Photo search UI: a search box, filters, a grid that loads more as you scroll,
// "similar" per photo, and a full-size viewer. Plain JS, no build step.
//
// Every request goes through fetch() (thumbnails too, turned into blob: URLs) so
// that, when the server wants a bearer token, one code path sends it. The token
// is asked once and kept in sessionStorage: this tab only, gone when it closes.

const PAGE_SIZE = 30;
// Tiles are about 200-250 CSS pixels: sharp on high-density screens too.
const THUMB_SIZE = window.devicePixelRatio > 1.5 ? 512 : 256;
const TOKEN_KEY = "handspring.photos.token";
const BROWSER_IMAGE_TYPES = new Set([
  "image/jpeg", "image/png", "image/gif", "image/webp", "image/bmp", "image/avif",
]);

const $ = (id) => document.getElementById(id);

const state = {
  request: null, // {kind: "search", query} or {kind: "similar", id, name}
  hits: [],
  offset: 0,
  done: true,
  loading: false,
  failed: false,
  generation: 0, // bumped by each new search, so late answers to old ones are dropped
  objectUrls: [],
  viewerIndex: -1,
  viewerUrl: null,
};

class HttpError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

// ------------------------------------------------------------------ requests

async function messageOf(response) {
  try {
    const body = await response.json();
    if (body && typeof body.message === "string") return body.message;
  } catch {
    // not JSON: fall back to the status line
  }
  return `${response.status} ${response.statusText}`.trim();
}

let tokenPrompt = null;

function askForToken(reason) {
  if (tokenPrompt) return tokenPrompt;
  tokenPrompt = new Promise((resolve) => {
    const dialog = $("auth");
    $("auth-reason").textContent = reason;
    $("auth-reason").hidden = !reason;
    $("auth-key").value = "";
    dialog.addEventListener(
      "close",
      () => {
        sessionStorage.setItem(TOKEN_KEY, $("auth-key").value.trim());
        tokenPrompt = null;
        resolve();
      },
      { once: true },
    );
    dialog.showModal();
  });
  return tokenPrompt;
}

async function api(path, init = {}) {
  for (;;) {
    const headers = new Headers(init.headers || {});
    const sent = sessionStorage.getItem(TOKEN_KEY);
    if (sent) headers.set("Authorization", `Bearer ${sent}`);
    const response = await fetch(path, { ...init, headers });
    if (response.status !== 401) {
      if (!response.ok) throw new HttpError(response.status, await messageOf(response));
      return response;
    }
    const reason = await messageOf(response);
    // Another request may already have got a new token while this one was out.
    if (sessionStorage.getItem(TOKEN_KEY) !== sent) continue;
    await askForToken(sent ? reason : "");
  }
}

function filterFields() {
  const filter = {};
  if ($("not-before").value) filter.notBefore = $("not-before").value;
  if ($("not-after").value) filter.notAfter = $("not-after").value;
  if ($("on-this-day").checked) filter.onThisDay = localToday();
  const minScore = $("min-score").value;
  if (minScore !== "" && Number.isFinite(Number(minScore))) filter.minScore = Number(minScore);
  return filter;
}

function localToday() {
  const now = new Date();
  const pad = (n) => String(n).padStart(2, "0");
  return `${now.getFullYear()}-${pad(now.getMonth() + 1)}-${pad(now.getDate())}`;
}

async function fetchPage(request, offset) {
  const filter = filterFields();
  if (request.kind === "search") {
    const response = await api("/api/search", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ query: request.query, limit: PAGE_SIZE, offset, filter }),
    });
    return response.json();
  }
  const params = new URLSearchParams({ limit: PAGE_SIZE, offset, ...filter });
  const response = await api(`/api/photos/${request.id}/similar?${params}`);
  return response.json();
}

async function blobUrl(path) {
  const blob = await (await api(path)).blob();
  return URL.createObjectURL(blob);
}

// ---------------------------------------------------------------- the grid

const thumbObserver = new IntersectionObserver(
  (entries) => {
    for (const entry of entries) {
      if (!entry.isIntersecting) continue;
      thumbObserver.unobserve(entry.target);
      loadThumbnail(entry.target);
    }
  },
  { rootMargin: "600px" },
);

async function loadThumbnail(img) {
  const tile = img.closest(".tile");
  try {
    const url = await blobUrl(img.dataset.src);
    state.objectUrls.push(url);
    img.addEventListener("load", () => tile.classList.add("loaded"), { once: true });
    img.src = url;
  } catch (error) {
    tile.classList.add("broken");
    tile.title = error.message;
  }
}

function element(tag, props = {}, children = []) {
  const node = Object.assign(document.createElement(tag), props);
  for (const child of children) node.append(child);
  return node;
}

function formatDate(iso) {
  if (!iso) return "";
  return iso.slice(0, 10);
}

function tile(hit, index) {
  const img = element("img", { alt: hit.name, decoding: "async" });
  img.dataset.src = `${hit.thumbnailUrl}?size=${THUMB_SIZE}`;
  thumbObserver.observe(img);
  const open = element("button", { type: "button", className: "thumb", title: hit.path }, [img]);
  open.addEventListener("click", () => openViewer(index));
  const similar = element("button", { type: "button", className: "similar quiet", textContent: "Similar" });
  similar.addEventListener("click", () => showSimilar(hit));
  const caption = element("figcaption", {}, [
    element("span", { className: "score", textContent: hit.score.toFixed(3) }),
    element("span", { className: "date", textContent: formatDate(hit.takenAt) }),
    similar,
  ]);
  const figure = element("figure", { className: "tile" }, [open, caption]);
  figure.dataset.id = hit.id;
  return figure;
}

function clearGrid() {
  for (const url of state.objectUrls) URL.revokeObjectURL(url);
  state.objectUrls = [];
  thumbObserver.disconnect();
  $("grid").replaceChildren();
}

function setStatus(text) {
  $("status").textContent = text;
}

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = !message;
}

function updateStatus() {
  const count = state.hits.length;
  if (state.failed) setStatus(count ? `${count} photo${count === 1 ? "" : "s"}` : "");
  else if (state.loading && count === 0) setStatus("Searching…");
  else if (count === 0) setStatus("No photos match.");
  else setStatus(`${count}${state.done ? "" : "+"} photo${count === 1 ? "" : "s"}`);
  $("grid").dataset.state = state.loading ? "loading" : state.done ? "done" : "more";
}

function startSearch(request) {
  state.generation += 1;
  state.request = request;
  state.hits = [];
  state.offset = 0;
  state.done = false;
  state.loading = false;
  state.failed = false;
  clearGrid();
  // Lets a watcher (a person's devtools, a browser test) tell this result set from the last.
  $("grid").dataset.generation = state.generation;
  showError("");
  const similar = request.kind === "similar";
  $("similar-banner").hidden = !similar;
  if (similar) $("similar-name").textContent = request.name;
  rememberInUrl(request);
  loadMore();
}

async function loadMore() {
  if (state.loading || state.done || !state.request) return;
  const generation = state.generation;
  state.loading = true;
  updateStatus();
  try {
    const page = await fetchPage(state.request, state.offset);
    if (generation !== state.generation) return;
    const start = state.hits.length;
    state.hits.push(...page.results);
    $("grid").append(...page.results.map((hit, i) => tile(hit, start + i)));
    state.offset += page.results.length;
    state.done = page.nextOffset === null || page.results.length === 0;
  } catch (error) {
    if (generation !== state.generation) return;
    showError(error.message);
    state.done = true;
    state.failed = true;
  } finally {
    if (generation === state.generation) {
      state.loading = false;
      updateStatus();
    }
  }
  // A page may not fill the window: keep loading while the end of the grid shows.
  if (generation === state.generation && !state.done && sentinelVisible()) loadMore();
}

function sentinelVisible() {
  const box = $("sentinel").getBoundingClientRect();
  return box.top < window.innerHeight + 300;
}

new IntersectionObserver(
  (entries) => {
    if (entries.some((entry) => entry.isIntersecting)) loadMore();
  },
  { rootMargin: "300px" },
).observe($("sentinel"));

function showSimilar(hit) {
  if ($("viewer").open) $("viewer").close();
  startSearch({ kind: "similar", id: hit.id, name: hit.name });
  window.scrollTo(0, 0);
}

function rememberInUrl(request) {
  const params = new URLSearchParams();
  if (request.kind === "search") params.set("q", request.query);
  else params.set("similar", request.id);
  history.replaceState(null, "", `?${params}`);
}

// ---------------------------------------------------------------- the viewer

function metaRow(list, label, value) {
  if (value === null || value === undefined || value === "") return;
  list.append(element("dt", { textContent: label }), element("dd", { textContent: value }));
}

function formatBytes(n) {
  if (n >= 1024 * 1024) return `${(n / 1024 / 1024).toFixed(1)} MB`;
  return `${Math.max(1, Math.round(n / 1024))} kB`;
}

async function openViewer(index) {
  const hit = state.hits[index];
  if (!hit) return;
  state.viewerIndex = index;
  const viewer = $("viewer");
  const image = $("viewer-image");
  $("viewer-title").textContent = hit.name;
  $("viewer-meta").replaceChildren();
  image.removeAttribute("src");
  image.alt = hit.name;
  viewer.dataset.id = hit.id;
  viewer.classList.add("loading");
  if (!viewer.open) viewer.showModal();
  try {
    const photo = await (await api(`/api/photos/${hit.id}`)).json();
    if (state.viewerIndex !== index) return;
    const list = $("viewer-meta");
    metaRow(list, "Taken", photo.takenAt ? photo.takenAt.replace("T", " ") : "unknown");
    metaRow(list, "Path", photo.path);
    metaRow(list, "Size", photo.width ? `${photo.width} × ${photo.height} px, ${formatBytes(photo.size)}` : formatBytes(photo.size));
    const camera = [photo.exif?.Make, photo.exif?.Model].filter(Boolean).join(" ");
    metaRow(list, "Camera", camera);
    if (photo.gps) metaRow(list, "Place", `${photo.gps.lat.toFixed(5)}, ${photo.gps.lon.toFixed(5)}`);
    metaRow(list, "Score", hit.score.toFixed(4));
    // Browsers show JPEG, PNG, WebP...; HEIC and TIFF come as a large server-made rendition.
    const source = BROWSER_IMAGE_TYPES.has(photo.mimeType)
      ? photo.originalUrl
      : `${photo.thumbnailUrl}?size=2048`;
    const url = await blobUrl(source);
    if (state.viewerIndex !== index) {
      URL.revokeObjectURL(url);
      return;
    }
    if (state.viewerUrl) URL.revokeObjectURL(state.viewerUrl);
    state.viewerUrl = url;
    image.addEventListener("load", () => viewer.classList.remove("loading"), { once: true });
    image.src = url;
  } catch (error) {
    viewer.classList.remove("loading");
    metaRow($("viewer-meta"), "Error", error.message);
  }
}

function stepViewer(delta) {
  const next = state.viewerIndex + delta;
  if (next < 0) return;
  if (next >= state.hits.length) {
    loadMore();
    return;
  }
  openViewer(next);
}

async function downloadOriginal() {
  const hit = state.hits[state.viewerIndex];
  if (!hit) return;
  try {
    const url = await blobUrl(hit.originalUrl);
    const link = element("a", { href: url, download: hit.name });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60_000);
  } catch (error) {
    showError(error.message);
  }
}

// ---------------------------------------------------------------- wiring

$("search-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const query = $("query").value.trim();
  if (query) startSearch({ kind: "search", query });
});

function rerun() {
  if (state.request) startSearch(state.request);
}

$("filters").addEventListener("change", rerun);
$("filters").addEventListener("submit", (event) => {
  event.preventDefault();
  rerun();
});
// Reset changes the fields after the event: search again once they are cleared.
$("filters").addEventListener("reset", () => setTimeout(rerun, 0));

$("similar-close").addEventListener("click", () => {
  const query = $("query").value.trim();
  if (query) {
    startSearch({ kind: "search", query });
    return;
  }
  state.generation += 1;
  state.request = null;
  clearGrid();
  $("similar-banner").hidden = true;
  setStatus("Type what you are looking for.");
  history.replaceState(null, "", location.pathname);
});

$("viewer-close").addEventListener("click", () => $("viewer").close());
$("viewer-prev").addEventListener("click", () => stepViewer(-1));
$("viewer-next").addEventListener("click", () => stepViewer(1));
$("viewer-download").addEventListener("click", downloadOriginal);
$("viewer-similar").addEventListener("click", () => {
  const hit = state.hits[state.viewerIndex];
  if (hit) showSimilar(hit);
});
$("viewer").addEventListener("close", () => {
  state.viewerIndex = -1;
  if (state.viewerUrl) URL.revokeObjectURL(state.viewerUrl);
  state.viewerUrl = null;
  $("viewer-image").removeAttribute("src");
});
$("viewer").addEventListener("keydown", (event) => {
  if (event.key === "ArrowLeft") stepViewer(-1);
  if (event.key === "ArrowRight") stepViewer(1);
});
// Clicking the backdrop (the dialog box itself, outside its content) closes it.
$("viewer").addEventListener("click", (event) => {
  if (event.target === $("viewer")) $("viewer").close();
});
// The sign-in prompt cannot be dismissed without a token: every request waits on it.
$("auth").addEventListener("cancel", (event) => event.preventDefault());

// A search in the address bar (?q=... or ?similar=id) runs on load.
const params = new URLSearchParams(location.search);
if (params.get("q")) {
  $("query").value = params.get("q");
  startSearch({ kind: "search", query: params.get("q") });
} else if (/^\d+$/.test(params.get("similar") || "")) {
  startSearch({ kind: "similar", id: Number(params.get("similar")), name: `photo ${params.get("similar")}` });
}
