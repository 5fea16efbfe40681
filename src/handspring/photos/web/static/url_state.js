// What the page shows lives in its URL, so reload, share, back and forward work:
//   ?q=beach&from=2019-01-01&to=2019-12-31&day=1&folder=/photos/2019&min=0.25
//   ?similar=42            photos like photo 42
//   ?view=duplicates&threshold=0.97
//   ?at=2019-03            the library from March 2019 down
//   &photo=42              the viewer open on photo 42

const DATE = /^\d{4}-\d{2}-\d{2}$/;
const MONTH = /^\d{4}-\d{2}$/;
const ID = /^[1-9]\d{0,18}$/;

export function parseState(search) {
  const params = new URLSearchParams(search);
  const number = (name) => {
    const value = params.get(name);
    return value !== null && value !== "" && Number.isFinite(Number(value)) ? Number(value) : null;
  };
  const filters = {
    from: DATE.test(params.get("from") || "") ? params.get("from") : "",
    to: DATE.test(params.get("to") || "") ? params.get("to") : "",
    day: params.get("day") === "1",
    folder: (params.get("folder") || "").startsWith("/") ? params.get("folder") : "",
    min: number("min"),
  };
  const state = {
    view: "library",
    q: "",
    similar: null,
    at: MONTH.test(params.get("at") || "") || params.get("at") === "undated" ? params.get("at") : null,
    threshold: number("threshold"),
    photo: ID.test(params.get("photo") || "") ? Number(params.get("photo")) : null,
    filters,
  };
  if (params.get("view") === "duplicates") state.view = "duplicates";
  else if (ID.test(params.get("similar") || "")) {
    state.view = "similar";
    state.similar = Number(params.get("similar"));
  } else if ((params.get("q") || "").trim()) {
    state.view = "search";
    state.q = params.get("q").trim();
  }
  return state;
}

export function formatState(state) {
  const params = new URLSearchParams();
  if (state.view === "search") params.set("q", state.q);
  if (state.view === "similar") params.set("similar", state.similar);
  if (state.view === "duplicates") {
    params.set("view", "duplicates");
    if (state.threshold !== null) params.set("threshold", state.threshold);
  }
  const f = state.filters;
  if (state.view !== "duplicates") {
    if (f.from) params.set("from", f.from);
    if (f.to) params.set("to", f.to);
    if (f.day) params.set("day", "1");
    if (f.min !== null && state.view !== "library") params.set("min", f.min);
  }
  if (f.folder) params.set("folder", f.folder);
  if (state.view === "library" && state.at) params.set("at", state.at);
  if (state.photo !== null) params.set("photo", state.photo);
  const text = params.toString();
  return text ? `?${text}` : location.pathname;
}

// Everything that decides the list of photos shown (not which one the viewer shows).
export function listKey(state) {
  return formatState({ ...state, photo: null });
}

export function withoutPhoto(state) {
  return { ...state, photo: null };
}

export function emptyFilters() {
  return { from: "", to: "", day: false, folder: "", min: null };
}
