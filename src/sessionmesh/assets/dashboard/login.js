"use strict";
// The dashboard's login: the person's passphrase buys a one-time link, which opens
// the session (an HttpOnly cookie) and the dashboard.
document.getElementById("login").addEventListener("submit", async (event) => {
  event.preventDefault();
  const error = document.getElementById("login-error");
  const field = document.getElementById("passphrase");
  error.textContent = "";
  let resp;
  try {
    resp = await fetch("/dashboard/v1/login", {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-Mesh-Dashboard": "1" },
      body: JSON.stringify({ passphrase: field.value }),
    });
  } catch (exc) {
    error.textContent = "the broker cannot be reached";
    return;
  }
  const answer = await resp.json().catch(() => ({}));
  if (!resp.ok) {
    error.textContent = (answer.error && answer.error.message) || `HTTP ${resp.status}`;
    field.select();
    return;
  }
  window.location.assign("/login?code=" + encodeURIComponent(answer.code));
});
