// The low-latency view: the server's tracks drawn here, over the local camera preview.

// Same colours as the server's annotation (app/stream/annotate.py PALETTE), by track id.
const PALETTE = [
  [0, 255, 0],
  [0, 200, 255],
  [255, 220, 0],
  [255, 0, 255],
  [255, 128, 0],
  [128, 255, 128],
  [0, 128, 255],
  [255, 255, 255],
];

function paletteEntry(id) {
  return PALETTE[((id % PALETTE.length) + PALETTE.length) % PALETTE.length];
}

export function trackColour(id) {
  return `rgb(${paletteEntry(id).join(" ")})`;
}

/** Black text on light tags, white on dark ones (as the server draws it). */
function inkFor(id) {
  return paletteEntry(id).reduce((sum, channel) => sum + channel, 0) > 300 ? "#000" : "#fff";
}

export function caption(track, options) {
  const parts = [];
  if (options.ids) parts.push(`#${track.id}`);
  if (options.labels && track.label) parts.push(track.label);
  return parts.join(" ");
}

/**
 * Draws `tracks` (boxes in pixels of a frameWidth x frameHeight frame) on `canvas`,
 * which covers `video` shown with object-fit: contain.
 */
export function drawTracks(canvas, video, tracks, frameSize, options) {
  const ratio = window.devicePixelRatio || 1;
  const width = Math.round(canvas.clientWidth * ratio);
  const height = Math.round(canvas.clientHeight * ratio);
  if (canvas.width !== width || canvas.height !== height) {
    canvas.width = width;
    canvas.height = height;
  }
  const context = canvas.getContext("2d");
  context.clearRect(0, 0, width, height);
  const sourceWidth = frameSize.width || video.videoWidth;
  const sourceHeight = frameSize.height || video.videoHeight;
  if (!sourceWidth || !sourceHeight || !video.videoWidth) return;
  // Where the video sits inside the element (letterboxing of object-fit: contain).
  const scale = Math.min(width / video.videoWidth, height / video.videoHeight);
  const shownWidth = video.videoWidth * scale;
  const shownHeight = video.videoHeight * scale;
  const left = (width - shownWidth) / 2;
  const top = (height - shownHeight) / 2;
  const sx = shownWidth / sourceWidth;
  const sy = shownHeight / sourceHeight;

  context.lineWidth = 2 * ratio;
  context.font = `${Math.round(12 * ratio)}px system-ui, sans-serif`;
  context.textBaseline = "top";
  if (!options.boxes && !options.labels && !options.ids) return;
  for (const track of tracks) {
    if (Number.isFinite(track.score) && track.score < options.min_score) continue;
    const [x1, y1, x2, y2] = track.box;
    const x = left + x1 * sx;
    const y = top + y1 * sy;
    const colour = trackColour(track.id);
    if (options.boxes) {
      context.strokeStyle = colour;
      context.strokeRect(x, y, (x2 - x1) * sx, (y2 - y1) * sy);
    }
    const text = caption(track, options);
    if (!text) continue;
    const pad = 3 * ratio;
    const textWidth = context.measureText(text).width + 2 * pad;
    const textHeight = 12 * ratio + 2 * pad;
    const textY = y - textHeight >= 0 ? y - textHeight : y;
    context.fillStyle = colour;
    context.fillRect(x, textY, textWidth, textHeight);
    context.fillStyle = inkFor(track.id);
    context.fillText(text, x + pad, textY + pad);
  }
}

export function clearCanvas(canvas) {
  canvas.getContext("2d").clearRect(0, 0, canvas.width, canvas.height);
}
