# shellcheck shell=bash
# Phase: cuda. The CUDA toolkit only (--toolkit): never its bundled driver,
# which would replace the pinned one (seed 001).
minor="${GS_CUDA_VERSION%.*}"
nvcc="$GS_ROOT/usr/local/cuda-${minor}/bin/nvcc"
if [ -x "$nvcc" ] && grep -q "release ${minor}" <<<"$("$nvcc" --version)"; then
  log "CUDA ${minor} toolkit present"
else
  runfile="/var/cache/gpu-stack/cuda_${GS_CUDA_VERSION}_linux.run"
  if [ ! -s "$GS_ROOT$runfile" ]; then
    mkdir -p "$GS_ROOT/var/cache/gpu-stack"
    repo_fetch "$GS_CUDA_RUNFILE_URL" -o "$GS_ROOT$runfile"
  fi
  sh "$GS_ROOT$runfile" --toolkit --silent --override --no-opengl-libs --tmpdir="$GS_ROOT/var/tmp"
  changed "installed CUDA ${GS_CUDA_VERSION} toolkit"
fi
write_file /etc/profile.d/gpu-stack-cuda.sh 0644 <<CONF || true
export CUDA_HOME=/usr/local/cuda-${minor}
export PATH="\$PATH:/usr/local/cuda-${minor}/bin"
CONF
log "done (changed=${GS_CHANGED})"
