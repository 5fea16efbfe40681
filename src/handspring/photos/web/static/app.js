// The photo-search page: the library newest first (months, a jump to any month, "on
// this day"), search by text or example, "similar", filters, folders, duplicates and a
// viewer; everything it shows is in its URL. Plain JS modules, no build step.

import { blobUrl, getJson, HttpError, postJson, ServerDown } from "./api.js";
import { DuplicatesView } from "./duplicates.js";
import * as fmt from "./format.js";
import { element, photoTile, skeletons, Thumbnails } from "./tiles.js";
import { emptyFilters, formatState, listKey, parseState, withoutPhoto } from "./url_state.js";
import { Viewer } from "./viewer.js";

const SEARCH_PAGE = 30;
const LIBRARY_PAGE = 40;
const MEMORIES = 24;
const $ = (id) => document.getElementById(id);

const app = {
  state: parseState(location.search),
  key: null, // listKey() of the list on screen
  list: null, // the PhotoList on screen
  status: null, // /api/status
  timeline: null, // /api/timeline for the library's filters
  generation: 0, // bumped by each new list, so late answers to old ones are dropped
  folders: false,
};

// ------------------------------------------------------------------ one list of photos

// A list the grid shows and the viewer walks: a page at a time, from one source.
class PhotoList {
  constructor(state, generation) {
    this.state = state;
    this.generation = generation;
    this.items = [];
    this.total = null;
    this.timeline = null; // the library's totals under this list's filters (library view)
    this.hasMore = true;
    // The library's pages wait for its totals: a page shown before them would head its
    // months without counts, and the summary would have nothing to say.
    this.ready = state.view !== "library";
    this.loading = null; // the page being fetched
    this.cursor = state.view === "library" ? startOf(state.at) : 0;
    this.thumbnails = new Thumbnails();
    this.lastMonth = null;
    this.best = null;
  }

  get live() {
    return this.generation === app.generation;
  }

  // Loads the next page (once at a time); true if it added photos.
  more() {
    if (!this.hasMore) return Promise.resolve(false);
    if (!this.loading) {
      this.loading = this.#fetch().finally(() => {
        this.loading = null;
      });
    }
    return this.loading;
  }

  async #fetch() {
    const before = this.items.length;
    const page = await this.#page();
    if (!this.live) return false;
    this.items.push(...page.photos);
    this.hasMore = page.more && page.photos.length > 0;
    return this.items.length > before;
  }

  async #page() {
    const f = this.state.filters;
    const filter = {};
    if (f.from) filter.notBefore = f.from;
    if (f.to) filter.notAfter = f.to;
    if (f.day) filter.onThisDay = fmt.localToday();
    if (f.folder) filter.folder = f.folder;
    if (this.state.view === "library") {
      const params = new URLSearchParams({ sort: "taken", limit: LIBRARY_PAGE, ...filter });
      if (this.cursor) params.set("before", this.cursor);
      const page = await getJson(`/api/photos?${params}`);
      this.cursor = page.nextBefore;
      return { photos: page.photos, more: page.nextBefore !== null };
    }
    if (f.min !== null) filter.minScore = f.min;
    const body = { limit: SEARCH_PAGE, offset: this.cursor };
    const page =
      this.state.view === "search"
        ? await postJson("/api/search", { query: this.state.q, filter, ...body })
        : await getJson(
            `/api/photos/${this.state.similar}/similar?${new URLSearchParams({ ...body, ...filter })}`,
          );
    if (this.cursor === 0) {
      this.total = page.total;
      this.undatedExcluded = page.undatedExcluded;
    }
    this.cursor += page.results.length;
    if (page.nextOffset === null) this.total = this.cursor;
    return { photos: page.results, more: page.nextOffset !== null };
  }
}

// Where the library starts for ?at=YYYY-MM: photos taken before the next month.
function startOf(at) {
  if (!at) return null;
  if (at === "undated") return "undated";
  const [year, month] = at.split("-").map(Number);
  const next = month === 12 ? `${year + 1}-01` : `${year}-${String(month + 1).padStart(2, "0")}`;
  return `${next}-01`;
}

// ------------------------------------------------------------------ the grid

function gridState(text) {
  $("grid").dataset.state = text;
}

async function loadMore() {
  const list = app.list;
  if (!list || !list.ready || !list.hasMore || list.loading) return;
  const first = list.items.length === 0;
  gridState("loading");
  if (first) {
    $("grid").append(...skeletons(12));
    if (list.state.view === "search" && !app.status?.models.textLoaded) {
      $("loading-model").hidden = false;
    }
  }
  try {
    const start = list.items.length;
    await list.more();
    if (!list.live) return;
    if (list.state.view === "search" && app.status) app.status.models.textLoaded = true;
    for (const skeleton of $("grid").querySelectorAll(".skeleton")) skeleton.remove();
    appendTiles(list, start);
    gridState(list.hasMore ? "more" : "done");
    showSummary();
  } catch (error) {
    if (!list.live) return;
    for (const skeleton of $("grid").querySelectorAll(".skeleton")) skeleton.remove();
    list.hasMore = false;
    gridState("error");
    showFailure(error);
    showSummary();
  } finally {
    if (list.live) $("loading-model").hidden = true;
  }
  // A page may not fill the window: keep going while the end of the grid shows.
  if (list.live && list.hasMore && sentinelVisible()) loadMore();
}

function appendTiles(list, start) {
  const grid = $("grid");
  const photos = list.items.slice(start);
  const searching = list.state.view !== "library";
  if (searching && list.best === null && photos.length) list.best = photos[0].score;
  for (const [offset, photo] of photos.entries()) {
    if (!searching) {
      const month = fmt.monthOf(photo.takenAt) || "undated";
      if (month !== list.lastMonth) {
        list.lastMonth = month;
        grid.append(monthHeading(month));
      }
    }
    const index = start + offset;
    grid.append(
      photoTile(photo, {
        thumbnails: list.thumbnails,
        onOpen: () => openViewer(index),
        onSimilar: showSimilar,
        relevance: searching ? relevance(photo.score, list.best) : null,
      }),
    );
  }
}

// How close to the best result, on a scale a person can read at a glance: cosines of
// one query sit in a narrow band, so the bar spans the 0.15 below the best.
function relevance(score, best) {
  return 1 - (best - score) / 0.15;
}

function monthHeading(month) {
  const count = app.timeline?.months.find((m) => m.month === month)?.count;
  const name = month === "undated" ? "No date" : fmt.monthName(month);
  const heading = element("h2", { className: "month" }, [
    element("span", { textContent: name }),
  ]);
  if (count !== undefined || month === "undated") {
    const n = month === "undated" ? app.timeline?.undated : count;
    if (n !== undefined) heading.append(element("span", { className: "count", textContent: fmt.plural(n, "photo") }));
  }
  heading.dataset.month = month;
  return heading;
}

function sentinelVisible() {
  return $("sentinel").getBoundingClientRect().top < window.innerHeight + 600;
}

new IntersectionObserver(
  (entries) => {
    if (entries.some((entry) => entry.isIntersecting)) loadMore();
  },
  { rootMargin: "600px" },
).observe($("sentinel"));

// ------------------------------------------------------------------ what the page says

function showSummary() {
  const list = app.list;
  const state = app.state;
  let text = "";
  if (state.view === "library") {
    const total = list?.timeline?.total;
    const filtered = hasFilters(state.filters);
    if (total !== undefined) {
      text = fmt.plural(total, "photo");
      if (filtered) text += " match the filters";
      else if (app.status?.lastChange) text += ` · indexed ${fmt.ago(app.status.lastChange)}`;
    }
  } else if (list) {
    const shown = list.items.length;
    if (list.total !== null && list.total !== undefined) {
      text = list.total === 0 ? "No photos match." : `${fmt.plural(list.total, "photo")}, best matches first`;
    } else if (!list.hasMore) {
      text = shown ? fmt.plural(shown, "photo") : "No photos match.";
    } else if (shown) {
      text = `${fmt.count(shown)}+ photos, best matches first`;
    } else {
      text = "Searching…";
    }
  }
  $("summary").textContent = text;
  const excluded = state.view === "library" ? undatedHidden() : list?.undatedExcluded;
  $("hint").hidden = !excluded;
  if (excluded) {
    $("hint").textContent = `${fmt.plural(excluded, "photo")} without a date ${excluded === 1 ? "is" : "are"} not shown: date filters leave them out.`;
  }
}

function undatedHidden() {
  const t = app.timeline;
  return t && !t.undatedIncluded ? t.undated : 0;
}

function hasFilters(f) {
  return Boolean(f.from || f.to || f.day || f.folder || f.min !== null);
}

function showFailure(error) {
  if (error instanceof ServerDown) {
    $("offline").hidden = false;
    $("error").hidden = true;
    return;
  }
  $("error").textContent = error.message;
  $("error").hidden = false;
}

// ------------------------------------------------------------------ views

function startList(state) {
  app.generation += 1;
  app.list?.thumbnails.clear();
  app.list = new PhotoList(state, app.generation);
  const grid = $("grid");
  grid.replaceChildren();
  // Lets a watcher (devtools, a browser test) tell this result set from the last.
  grid.dataset.generation = app.generation;
  gridState("loading");
  $("error").hidden = true;
  $("offline").hidden = true;
  $("hint").hidden = true;
  $("summary").textContent = "";
  $("to-newest").hidden = !(state.view === "library" && state.at);
}

async function render(state) {
  const library = state.view === "library";
  const duplicates = state.view === "duplicates";
  document.body.dataset.view = state.view;
  const titles = { library: "Library", search: "Search results", similar: "Similar photos" };
  $("view-title").textContent = titles[state.view] || "";
  $("view-title").hidden = duplicates;
  $("similar-banner").hidden = state.view !== "similar";
  $("memories").hidden = true;
  $("jump-label").hidden = !library;
  $("duplicates").hidden = !duplicates;
  for (const id of ["grid", "sentinel", "summary"]) $(id).hidden = duplicates;
  $("nav-library").setAttribute("aria-current", String(!duplicates));
  $("nav-duplicates").setAttribute("aria-current", String(duplicates));
  startList(state);
  const generation = app.generation;
  if (duplicates) {
    app.list.hasMore = false;
    gridState("done");
    duplicatesView.show(state);
    return;
  }
  if (state.view === "similar") showReference(state.similar, generation);
  if (library) {
    let timeline;
    try {
      timeline = await getJson(`/api/timeline?${filterParams(state.filters)}`);
    } catch (error) {
      if (generation !== app.generation) return;
      app.list.hasMore = false;
      gridState("error");
      showFailure(error);
      return;
    }
    // A late answer for an older list must not become the totals of the one on screen.
    if (generation !== app.generation) return;
    app.timeline = timeline;
    app.list.timeline = timeline; // the totals of this list, whatever comes after
    app.list.ready = true;
    fillJump();
    if (!hasFilters(state.filters) && !state.at) showMemories(generation);
  }
  loadMore();
}

function filterParams(f, extra = {}) {
  const params = new URLSearchParams(extra);
  if (f.from) params.set("notBefore", f.from);
  if (f.to) params.set("notAfter", f.to);
  if (f.day) params.set("onThisDay", fmt.localToday());
  if (f.folder) params.set("folder", f.folder);
  return params;
}

function fillJump() {
  const select = $("jump");
  const options = [element("option", { value: "", textContent: "Newest" })];
  const years = new Map();
  for (const { month, count } of app.timeline.months) {
    const year = month.slice(0, 4);
    if (!years.has(year)) years.set(year, element("optgroup", { label: year }));
    years.get(year).append(
      element("option", { value: month, textContent: `${fmt.monthName(month)} (${fmt.count(count)})` }),
    );
  }
  options.push(...years.values());
  if (app.timeline.undatedIncluded && app.timeline.undated) {
    options.push(element("option", { value: "undated", textContent: `No date (${fmt.count(app.timeline.undated)})` }));
  }
  select.replaceChildren(...options);
  select.value = app.state.at || "";
}

async function showMemories(generation) {
  const params = new URLSearchParams({ onThisDay: fmt.localToday(), limit: MEMORIES });
  try {
    const page = await getJson(`/api/photos?${params}`);
    if (generation !== app.generation || page.photos.length === 0) return;
    const thumbnails = app.list.thumbnails;
    const list = { items: page.photos, total: page.photos.length, hasMore: false, more: async () => false };
    const tiles = page.photos.map((photo, index) => {
      const tile = photoTile(photo, { thumbnails, onOpen: () => viewer.show(list, index), onSimilar: null });
      tile.querySelector(".date").textContent = fmt.yearsAgo(photo.takenAt);
      return tile;
    });
    $("memories-strip").replaceChildren(...tiles);
    $("memories").hidden = false;
  } catch {
    // The strip is a bonus: the library itself reports what went wrong.
  }
}

async function showReference(photoId, generation) {
  $("similar-name").textContent = `photo ${photoId}`;
  $("similar-thumb").removeAttribute("src");
  try {
    const photo = await getJson(`/api/photos/${photoId}`);
    if (generation !== app.generation) return;
    $("similar-name").textContent = photo.name;
    $("similar-thumb").alt = photo.name;
    const url = await blobUrl(`${photo.thumbnailUrl}?size=256`);
    if (generation !== app.generation) return URL.revokeObjectURL(url);
    app.list.thumbnails.urls.push(url);
    $("similar-thumb").src = url;
  } catch {
    // The list below says what is wrong with the photo.
  }
}

// ------------------------------------------------------------------ navigation

function navigate(next, { replace = false } = {}) {
  const depth = history.state?.depth ?? 0;
  const url = formatState(next);
  if (replace) history.replaceState({ ...history.state, depth }, "", url);
  else history.pushState({ depth: depth + 1, viewer: next.photo !== null }, "", url);
  apply(next);
}

function apply(state) {
  app.state = state;
  syncControls(state);
  const key = listKey(state);
  if (key !== app.key) {
    app.key = key;
    if (viewer.isOpen && state.photo === null) viewer.close();
    render(state);
  }
  syncViewer(state);
}

function syncControls(state) {
  const f = state.filters;
  $("query").value = state.view === "search" ? state.q : "";
  $("not-before").value = f.from;
  $("not-after").value = f.to;
  $("on-this-day").checked = f.day;
  $("min-score").value = f.min === null ? "" : String(f.min);
  $("min-score-label").hidden = state.view === "library" || state.view === "duplicates";
  if (f.folder && ![...$("folder").options].some((o) => o.value === f.folder)) {
    $("folder").append(element("option", { value: f.folder, textContent: f.folder }));
  }
  $("folder").value = f.folder;
  $("threshold").value = String(state.threshold ?? 0.97);
}

async function syncViewer(state) {
  if (state.photo === null) {
    if (viewer.isOpen) viewer.close();
    return;
  }
  if (viewer.isOpen && Number(viewer.dialog.dataset.id) === state.photo) return;
  const list = app.list;
  const index = list ? list.items.findIndex((p) => p.id === state.photo) : -1;
  if (index >= 0) {
    viewer.show(list, index);
    return;
  }
  // A shared link to a photo the list has not loaded (or does not hold).
  try {
    const photo = await getJson(`/api/photos/${state.photo}`);
    if (app.state.photo !== photo.id) return;
    viewer.show({ items: [photo], total: 1, hasMore: false, more: async () => false }, 0);
  } catch (error) {
    showFailure(error);
  }
}

function openViewer(index) {
  const photo = app.list.items[index];
  navigate({ ...app.state, photo: photo.id });
}

function showSimilar(photo) {
  navigate({ ...app.state, view: "similar", similar: photo.id, q: "", at: null, photo: null });
  window.scrollTo(0, 0);
}

function search(query) {
  const next = { ...app.state, at: null, photo: null, similar: null };
  if (query) navigate({ ...next, view: "search", q: query });
  else navigate({ ...next, view: "library", q: "" });
  window.scrollTo(0, 0);
}

function filtersFromForm() {
  const min = $("min-score").value;
  return {
    from: $("not-before").value,
    to: $("not-after").value,
    day: $("on-this-day").checked,
    folder: $("folder").value,
    min: min !== "" && Number.isFinite(Number(min)) ? Number(min) : null,
  };
}

const viewer = new Viewer({
  similar: showSimilar,
  moved(photo) {
    if (app.state.photo !== null && app.state.photo !== photo.id) {
      const next = { ...app.state, photo: photo.id };
      app.state = next;
      history.replaceState(history.state, "", formatState(next));
    }
  },
  closed() {
    if (app.state.photo === null) return;
    // Opened by a click here: going back is closing. Opened from a link: just drop it.
    if (history.state?.viewer) history.back();
    else navigate(withoutPhoto(app.state), { replace: true });
  },
});

const duplicatesView = new DuplicatesView({
  open(list, index) {
    viewer.show(list, index);
  },
  similar: showSimilar,
  failed: showFailure,
});

// ------------------------------------------------------------------ wiring

$("search-form").addEventListener("submit", (event) => {
  event.preventDefault();
  search($("query").value.trim());
});

let warmed = false;
$("query").addEventListener("input", () => {
  // Typing a query: load the text model meanwhile, so the search does not wait for it.
  if (warmed || app.status?.models.textLoaded !== false) return;
  warmed = true;
  postJson("/api/warmup", {}).catch(() => {});
});

$("filters").addEventListener("change", (event) => {
  if (event.target.id === "threshold") return;
  const next = { ...app.state, filters: filtersFromForm(), at: null, photo: null };
  navigate(next);
});
$("filters").addEventListener("submit", (event) => event.preventDefault());
$("filters").addEventListener("reset", (event) => {
  event.preventDefault();
  navigate({ ...app.state, filters: emptyFilters(), at: null, photo: null });
});

$("similar-close").addEventListener("click", () => {
  if ((history.state?.depth ?? 0) > 0) history.back();
  else navigate({ ...app.state, view: "library", similar: null });
});

$("jump").addEventListener("change", () => {
  navigate({ ...app.state, at: $("jump").value || null });
  window.scrollTo(0, 0);
});
$("to-newest").addEventListener("click", () => navigate({ ...app.state, at: null }));

for (const [id, view] of [["nav-library", "library"], ["nav-duplicates", "duplicates"]]) {
  $(id).addEventListener("click", (event) => {
    event.preventDefault();
    navigate({ ...parseState(""), view, filters: { ...app.state.filters } });
  });
}

$("duplicates-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const threshold = Number($("threshold").value);
  navigate({ ...app.state, threshold: Number.isFinite(threshold) ? threshold : null });
});

$("retry").addEventListener("click", () => start());

// "/" puts the cursor in the search box, as on most sites with one.
document.addEventListener("keydown", (event) => {
  if (event.key !== "/" || event.ctrlKey || event.metaKey || event.altKey) return;
  const target = event.target;
  if (target.closest("input, select, textarea, dialog[open]")) return;
  event.preventDefault();
  $("query").focus();
});

window.addEventListener("popstate", () => apply(parseState(location.search)));

// The sign-in prompt cannot be dismissed without a token: every request waits on it.
$("auth").addEventListener("cancel", (event) => event.preventDefault());

async function loadFolders() {
  if (app.folders) return;
  const { folders } = await getJson("/api/folders");
  app.folders = true;
  const options = [element("option", { value: "", textContent: "All folders" })];
  for (const folder of folders) {
    const name = folder.depth === 0 ? folder.path : folder.path.split("/").pop();
    const indent = "\u00a0\u00a0".repeat(folder.depth);
    const option = element("option", {
      value: folder.path, textContent: `${indent}${name} (${fmt.count(folder.photos)})`,
    });
    option.title = folder.path;
    options.push(option);
  }
  const select = $("folder");
  const chosen = select.value;
  select.replaceChildren(...options);
  if (chosen && !folders.some((f) => f.path === chosen)) {
    select.append(element("option", { value: chosen, textContent: chosen }));
  }
  select.value = chosen;
}

// Status first: a server that wants a key asks for it now, not at the first search.
async function start() {
  $("offline").hidden = true;
  $("error").hidden = true;
  try {
    app.status = await getJson("/api/status");
    await loadFolders();
  } catch (error) {
    gridState("error");
    showFailure(error instanceof HttpError || error instanceof ServerDown ? error : new Error(String(error)));
    return;
  }
  app.key = null;
  apply(parseState(location.search));
}

start();
