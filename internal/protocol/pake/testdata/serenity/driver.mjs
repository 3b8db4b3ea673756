// Test-only driver for serenity_test.go: the unmodified @serenity-kit/opaque
// client, one JSON request per stdin line, one JSON answer per stdout line.
// It keeps no state: the Go test holds the serenity state strings. All
// byte strings are serenity-kit's base64url without padding.
import * as opaque from "@serenity-kit/opaque";
import * as readline from "node:readline";

await opaque.ready;

const ops = {
  regStart: (r) => {
    const o = opaque.client.startRegistration({ password: r.password });
    return { state: o.clientRegistrationState, message: o.registrationRequest };
  },
  regFinish: (r) => {
    const params = {
      clientRegistrationState: r.state,
      registrationResponse: r.message,
      password: r.password,
    };
    if (r.keyStretching) params.keyStretching = r.keyStretching;
    const o = opaque.client.finishRegistration(params);
    return { message: o.registrationRecord, exportKey: o.exportKey, serverStaticPublicKey: o.serverStaticPublicKey };
  },
  loginStart: (r) => {
    const o = opaque.client.startLogin({ password: r.password });
    return { state: o.clientLoginState, message: o.startLoginRequest };
  },
  loginFinish: (r) => {
    const params = { clientLoginState: r.state, loginResponse: r.message, password: r.password };
    if (r.keyStretching) params.keyStretching = r.keyStretching;
    const o = opaque.client.finishLogin(params);
    if (!o) return { ok: false };
    return { ok: true, message: o.finishLoginRequest, exportKey: o.exportKey, sessionKey: o.sessionKey, serverStaticPublicKey: o.serverStaticPublicKey };
  },
};

const rl = readline.createInterface({ input: process.stdin, terminal: false });
for await (const line of rl) {
  let out;
  try {
    const r = JSON.parse(line);
    const op = ops[r.op];
    out = op ? op(r) : { error: "unknown op " + r.op };
  } catch (e) {
    out = { error: String(e) };
  }
  process.stdout.write(JSON.stringify(out) + "\n");
}
