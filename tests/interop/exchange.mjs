// openid-client (panva, v6) against keymint: discovery, the RFC 8693 token-exchange grant as a
// public client, and jose verifying the result against the discovered jwks_uri.
//   node exchange.mjs ISSUER CLIENT_ID DISCOVERY(oidc|oauth2)
// reads {"subject_token", "subject_token_type", "audience", "scope"} on stdin, prints one JSON
// line: {"ok": true, "metadata", "response", "header", "claims"} or {"ok": false, ...}.
import * as client from "openid-client";
import { createRemoteJWKSet, jwtVerify } from "jose";

const [issuer, clientId, algorithm] = process.argv.slice(2);
let input = "";
for await (const chunk of process.stdin) input += chunk;
const request = JSON.parse(input);
let stage = "discovery";
try {
  const config = await client.discovery(new URL(issuer), clientId, undefined, client.None(), {
    algorithm, // "oidc": /.well-known/openid-configuration; "oauth2": RFC 8414's document
    execute: [client.allowInsecureRequests], // the test gateway listens on http://127.0.0.1
  });
  const metadata = config.serverMetadata();
  stage = "exchange";
  const parameters = {
    subject_token: request.subject_token,
    subject_token_type: request.subject_token_type,
    audience: request.audience,
  };
  if (request.scope) parameters.scope = request.scope;
  const response = await client.genericGrantRequest(
    config,
    "urn:ietf:params:oauth:grant-type:token-exchange",
    parameters,
  );
  stage = "verify";
  const jwks = createRemoteJWKSet(new URL(metadata.jwks_uri));
  const { payload, protectedHeader } = await jwtVerify(response.access_token, jwks, {
    issuer: metadata.issuer,
    audience: request.audience,
    algorithms: ["EdDSA"],
    requiredClaims: ["exp", "iat", "nbf", "jti", "sub"],
  });
  const { access_token, ...rest } = response; // the token itself stays out of the output
  console.log(JSON.stringify({
    ok: true,
    metadata,
    response: { ...rest, access_token_length: access_token.length },
    header: protectedHeader,
    claims: payload,
  }));
} catch (error) {
  console.log(JSON.stringify({
    ok: false,
    stage,
    name: error.name,
    code: error.code,
    error: error.error,
    error_description: error.error_description,
    status: error.status,
    message: error.message,
  }));
  process.exitCode = 1;
}
