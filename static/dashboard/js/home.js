// Fleet overview: htmx polls the table; if the session has expired the poll lands on the
// login page, so go there instead of pasting a login form into the table.
document.addEventListener("htmx:beforeSwap", (event) => {
  const url = event.detail.xhr.responseURL || "";
  if (new URL(url, location.href).pathname.startsWith("/login/")) {
    event.preventDefault();
    location.assign(url);
  }
});
