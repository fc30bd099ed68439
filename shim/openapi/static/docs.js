// Starts Swagger UI over the shim's own OpenAPI document. A file, not an inline script: the
// page's Content-Security-Policy runs scripts from the shim's origin only.
"use strict";
window.addEventListener("DOMContentLoaded", function () {
  var root = document.getElementById("swagger-ui");
  window.ui = SwaggerUIBundle({
    url: new URL(root.dataset.spec, document.baseURI).href,
    domNode: root,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
    deepLinking: true,
    // Swagger UI would send the document to a public validator: nothing leaves the page.
    validatorUrl: null,
    // A token is kept for the page's life only, never in the browser's storage.
    persistAuthorization: false,
    displayRequestDuration: true,
  });
});
