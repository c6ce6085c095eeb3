// Starts Swagger UI on /api/docs. A file, not an inline script, so the page's CSP can say script-src 'self'.
// No validator badge (it would send the schema to validator.swagger.io); the token is never persisted.
window.addEventListener("load", () => {
  window.ui = SwaggerUIBundle({
    url: "/api/openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    validatorUrl: null,
    persistAuthorization: false,
  });
});
