// Signalling shared by Sotto's pages (the call page and the avatar's watch
// page), as WHIP/WHEP do it: the whole offer, every candidate gathered,
// POSTed as application/sdp; a 201 carries the answer and the Location to
// DELETE when done.

// Offers `pc` to `url` (a bearer `token` when given) and applies the
// answer. Returns the resource's Location, or throws with the server's
// status and reason.
export async function negotiate(pc, url, token) {
  await pc.setLocalDescription(await pc.createOffer());
  await new Promise(done => {
    if (pc.iceGatheringState === "complete") return done();
    pc.addEventListener("icegatheringstatechange", () => pc.iceGatheringState === "complete" && done());
  });
  const headers = { "Content-Type": "application/sdp" };
  if (token) headers.Authorization = "Bearer " + token;
  const r = await fetch(url, { method: "POST", headers, body: pc.localDescription.sdp });
  if (r.status !== 201) throw new Error("refused: " + r.status + " " + await r.text());
  const location = r.headers.get("Location");
  await pc.setRemoteDescription({ type: "answer", sdp: await r.text() });
  return location;
}

// Ends a resource made by `negotiate`; a server already gone is no error.
export async function leave(location) {
  if (location) await fetch(location, { method: "DELETE" }).catch(() => {});
}
