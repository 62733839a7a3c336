// Camera access: constraints, the device list, and messages a person can act on.

export const RESOLUTIONS = {
  "640x480": { width: 640, height: 480 },
  "1280x720": { width: 1280, height: 720 },
};

/** A camera problem with a title and an instruction, ready to show. */
export class CameraError extends Error {
  constructor(kind, title, help) {
    super(`${title} ${help}`);
    this.name = "CameraError";
    this.kind = kind;
    this.title = title;
    this.help = help;
  }
}

export function cameraError(error) {
  switch (error?.name) {
    case "NotAllowedError":
    case "SecurityError":
    case "PermissionDeniedError":
      return new CameraError(
        "denied",
        "Camera access was denied.",
        "Allow the camera for this site (the camera icon in the address bar), then press Start again.",
      );
    case "NotFoundError":
    case "DevicesNotFoundError":
    case "OverconstrainedError":
      return new CameraError(
        "missing",
        "No camera was found.",
        "Connect a camera (or check that the selected one is still plugged in), then press Start again.",
      );
    case "NotReadableError":
    case "TrackStartError":
    case "AbortError":
      return new CameraError(
        "busy",
        "The camera could not be started.",
        "Another application may be using it: close that application, then press Start again.",
      );
    default:
      return new CameraError("other", "The camera could not be opened.", error?.message || String(error));
  }
}

/** The local camera stream; throws CameraError. */
export async function openCamera(deviceId, resolution) {
  if (!navigator.mediaDevices?.getUserMedia) {
    throw new CameraError(
      "insecure",
      "This page cannot use a camera here.",
      "Browsers allow cameras only on secure pages: open it over HTTPS, or from localhost.",
    );
  }
  const size = RESOLUTIONS[resolution] ?? RESOLUTIONS["640x480"];
  const video = {
    width: { ideal: size.width },
    height: { ideal: size.height },
    frameRate: { ideal: 30 },
  };
  if (deviceId) video.deviceId = { exact: deviceId };
  try {
    return await navigator.mediaDevices.getUserMedia({ video, audio: false });
  } catch (error) {
    throw cameraError(error);
  }
}

/** Video inputs; labels are empty until the page has been granted the camera once. */
export async function listCameras() {
  if (!navigator.mediaDevices?.enumerateDevices) return [];
  const devices = await navigator.mediaDevices.enumerateDevices();
  return devices.filter((device) => device.kind === "videoinput");
}
