// The page that shows a new API key once: select it on click, copy it with the button.
// A static file rather than inline handlers: the Content-Security-Policy runs no inline script.
(function () {
  "use strict";
  var field = document.getElementById("new-api-key");
  var copy = document.getElementById("copy-api-key");
  if (!field) { return; }
  field.addEventListener("click", function () { field.select(); });
  if (copy) {
    copy.addEventListener("click", function () {
      if (navigator.clipboard) { navigator.clipboard.writeText(field.value); }
    });
  }
})();
