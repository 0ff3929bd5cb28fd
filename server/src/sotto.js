// Signalling shared by Sotto's pages (the call page and the avatar's watch
// page), as WHIP/WHEP do it: the whole offer, every candidate gathered,
// POSTed as application/sdp; a 201 carries the answer, the Location to
// DELETE when done, and the key (Sotto-Key) every later request on it
// carries as its bearer.

// The headers of a request made as the holder of `bearer` (a key or a
// token; none when not given).
export function as(bearer, headers = {}) {
  if (bearer) headers.Authorization = "Bearer " + bearer;
  return headers;
}

// Offers `pc` to `url` (a bearer `token` when given) and applies the
// answer. Returns the resource's { location, key }, or throws with the
// server's status and reason.
export async function negotiate(pc, url, token) {
  await pc.setLocalDescription(await pc.createOffer());
  await new Promise(done => {
    if (pc.iceGatheringState === "complete") return done();
    pc.addEventListener("icegatheringstatechange", () => pc.iceGatheringState === "complete" && done());
  });
  const headers = as(token, { "Content-Type": "application/sdp" });
  const r = await fetch(url, { method: "POST", headers, body: pc.localDescription.sdp });
  if (r.status !== 201) throw new Error("refused: " + r.status + " " + await r.text());
  const location = r.headers.get("Location");
  const key = r.headers.get("Sotto-Key");
  await pc.setRemoteDescription({ type: "answer", sdp: await r.text() });
  return { location, key };
}

// Ends a resource made by `negotiate` (its full URL and key); a server
// already gone is no error.
export async function leave(where, key) {
  if (where) await fetch(where, { method: "DELETE", headers: as(key) }).catch(() => {});
}
