// Every request of the page goes through api(): thumbnails and originals too (turned
// into blob: URLs), so that when the server wants a bearer token one code path sends
// it. The token is asked once and kept in sessionStorage: this tab only.

const TOKEN_KEY = "handspring.photos.token";

export class HttpError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

// The server could not be reached at all (stopped, restarting, network down).
export class ServerDown extends Error {}

async function messageOf(response) {
  try {
    const body = await response.json();
    if (body && typeof body.message === "string") return body.message;
  } catch {
    // not JSON: the status line says enough
  }
  return `${response.status} ${response.statusText}`.trim();
}

let tokenPrompt = null;

function askForToken(reason) {
  if (tokenPrompt) return tokenPrompt;
  tokenPrompt = new Promise((resolve) => {
    const dialog = document.getElementById("auth");
    const why = document.getElementById("auth-reason");
    why.textContent = reason;
    why.hidden = !reason;
    document.getElementById("auth-key").value = "";
    dialog.addEventListener(
      "close",
      () => {
        sessionStorage.setItem(TOKEN_KEY, document.getElementById("auth-key").value.trim());
        tokenPrompt = null;
        resolve();
      },
      { once: true },
    );
    dialog.showModal();
  });
  return tokenPrompt;
}

export async function api(path, init = {}) {
  for (;;) {
    const headers = new Headers(init.headers || {});
    const sent = sessionStorage.getItem(TOKEN_KEY);
    if (sent) headers.set("Authorization", `Bearer ${sent}`);
    let response;
    try {
      response = await fetch(path, { ...init, headers });
    } catch {
      throw new ServerDown("The photo server cannot be reached.");
    }
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

export async function getJson(path) {
  return (await api(path)).json();
}

export async function postJson(path, body) {
  const response = await api(path, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  return response.json();
}

export async function blobUrl(path) {
  const blob = await (await api(path)).blob();
  return URL.createObjectURL(blob);
}

// What a photo's file request said about the file: the tile and the viewer show it.
export function fileStateOf(error) {
  if (!(error instanceof HttpError)) return "error";
  return { 410: "missing", 409: "changed", 422: "unreadable", 500: "unreadable" }[error.status] || "error";
}
