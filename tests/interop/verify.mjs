// Verify a keymint token with jose, independently of Python: node verify.mjs ISSUER AUDIENCE
// reads {"jwks": {...}, "token": "..."} on stdin, prints the verified claims as JSON.
import { createLocalJWKSet, jwtVerify } from "jose";

const [issuer, audience] = process.argv.slice(2);
let input = "";
for await (const chunk of process.stdin) input += chunk;
const { jwks, token } = JSON.parse(input);
try {
  const { payload, protectedHeader } = await jwtVerify(token, createLocalJWKSet(jwks), {
    issuer,
    audience,
    algorithms: ["EdDSA"],
    requiredClaims: ["exp", "iat", "nbf", "jti", "sub"],
  });
  console.log(JSON.stringify({ ok: true, header: protectedHeader, claims: payload }));
} catch (error) {
  console.log(JSON.stringify({ ok: false, code: error.code, message: error.message }));
  process.exitCode = 1;
}
