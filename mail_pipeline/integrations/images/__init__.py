"""Image hosting for proofs: the Cloudflare Images client (:mod:`.cloudflare`) and its
local, file-backed sandbox (:mod:`.sandbox`)."""
