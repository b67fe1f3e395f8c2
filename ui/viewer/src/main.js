// The review app's image viewer and keyboard: Cornerstone3D (core and tools) over the study's stored pixels.
//
// The app's server renders `<div class="xv-root" data-pixels=... data-heat=...>` wherever a film is to be read;
// this script mounts a viewer into each one it finds (Gradio replaces the element when another study opens, so
// a MutationObserver mounts the new one and lets go of the old). Pixels come from GET /review/studies/{id}/pixels
// (ui/study_media.py): the stored samples (8 or 16 bit) with their rows, columns, bit depth and window in headers,
// so window/level works on what the modality stored, not on an 8-bit copy. The Grad-CAM layer is an RGBA PNG
// laid over the film on a canvas of its own, placed from the viewport's camera at every render.
//
// Mouse: left drag window/level (or pan or zoom, as chosen), middle drag pan, right drag zoom, wheel zoom.
// Keys (outside text fields): see KEYS below; the same list is shown by the viewer's "Keys" button.

import {
  Enums,
  RenderingEngine,
  cache,
  imageLoader,
  init as coreInit,
  metaData,
  utilities,
} from '@cornerstonejs/core';
import {
  Enums as ToolEnums,
  PanTool,
  ToolGroupManager,
  WindowLevelTool,
  ZoomTool,
  addTool,
  init as toolsInit,
} from '@cornerstonejs/tools';

const SCHEME = 'xraylab';
const ENGINE_ID = 'xraylab-engine';
const TOOL_GROUP_ID = 'xraylab-tools';
const PANES = ['main', 'prior'];
const { MouseBindings } = ToolEnums;

export const KEYS = [
  ['P / N / D', 'verdict: Pneumonia / Normal / Not diagnostic'],
  ['Enter', 'record the verdict and open the next unreviewed study'],
  ['Shift+Enter', 'record the verdict and stay on this study'],
  ['Ctrl+Enter', 'the same as Enter, from inside the notes'],
  ['Esc', 'leave the notes (back to the keys)'],
  ['1 / 2 / 3 / 4', 'window: the file\'s / full range / soft / hard'],
  ['I', 'invert'],
  ['F / O', 'fit to the panel / one image pixel per screen pixel (1:1)'],
  ['R', 'reset window, zoom and pan'],
  ['H', 'Grad-CAM layer on or off (press again and again to flicker)'],
  ['[ / ]', 'Grad-CAM layer fainter / stronger'],
  ['J / K', 'next / previous study in the worklist'],
  ['W', 'back to the worklist'],
  ['?', 'this list'],
];

// ---------------------------------------------------------------------------------------------------------
// Cornerstone: one rendering engine, one tool group, an image loader for our pixels route and its metadata.

const imageMeta = new Map(); // imageId -> what the pixels route said about the picture
let started = null;

class PictureError extends Error {
  constructor(status, detail) {
    super(detail || `the picture could not be loaded (HTTP ${status})`);
    this.status = status;
  }
}

function metadataProvider(type, imageId) {
  const m = imageMeta.get(imageId);
  if (!m) return undefined;
  switch (type) {
    case 'imagePixelModule':
      return {
        samplesPerPixel: 1, photometricInterpretation: m.photometric, rows: m.rows, columns: m.columns,
        bitsAllocated: m.bitsAllocated, bitsStored: m.bitsStored, highBit: m.bitsStored - 1,
        pixelRepresentation: m.pixelRepresentation,
      };
    case 'imagePlaneModule':
      return {
        frameOfReferenceUID: imageId, rows: m.rows, columns: m.columns,
        imageOrientationPatient: [1, 0, 0, 0, 1, 0], rowCosines: [1, 0, 0], columnCosines: [0, 1, 0],
        imagePositionPatient: [0, 0, 0], pixelSpacing: [1, 1], rowPixelSpacing: 1, columnPixelSpacing: 1,
      };
    case 'generalSeriesModule':
      return { modality: 'DX', seriesInstanceUID: imageId, studyInstanceUID: imageId, seriesNumber: 1 };
    case 'voiLutModule':
      return { windowCenter: [m.center], windowWidth: [m.width] };
    case 'modalityLutModule':
      return { rescaleSlope: 1, rescaleIntercept: 0 };
    case 'generalImageModule':
      return { instanceNumber: 1 };
    default:
      return undefined;
  }
}

async function fetchOk(url) {
  // A picture route's answer, or its refusal as a PictureError with the route's own words (its JSON detail).
  const response = await fetch(url, { credentials: 'same-origin' });
  if (!response.ok) {
    let detail = '';
    try { detail = (await response.json()).detail || ''; } catch (e) { /* not JSON */ }
    throw new PictureError(response.status, detail);
  }
  return response;
}

async function fetchPicture(imageId) {
  const response = await fetchOk(imageId.slice(SCHEME.length + 1));
  const number = (name, fallback) => {
    const value = Number(response.headers.get(`X-${name}`));
    return Number.isFinite(value) && response.headers.get(`X-${name}`) !== null ? value : fallback;
  };
  const rows = number('Rows', 0);
  const columns = number('Columns', 0);
  const bitsAllocated = number('Bits-Allocated', 8);
  const pixelRepresentation = number('Pixel-Representation', 0);
  const buffer = await response.arrayBuffer();
  const Typed = bitsAllocated === 8 ? Uint8Array : pixelRepresentation ? Int16Array : Uint16Array;
  if (!rows || !columns || buffer.byteLength !== rows * columns * Typed.BYTES_PER_ELEMENT) {
    throw new PictureError(500, `the picture's size does not match its header (${columns} x ${rows})`);
  }
  const slope = number('Rescale-Slope', 1) || 1;
  const intercept = number('Rescale-Intercept', 0);
  // Window/level runs on the stored values: the file's window (in modality units) is brought back to them.
  const m = {
    rows, columns, bitsAllocated, pixelRepresentation, slope, intercept,
    bitsStored: number('Bits-Stored', bitsAllocated),
    photometric: response.headers.get('X-Photometric') || 'MONOCHROME2',
    format: response.headers.get('X-Source-Format') || '',
    min: number('Min-Value', 0),
    max: number('Max-Value', bitsAllocated === 8 ? 255 : 65535),
    center: (number('Window-Center', 127.5) - intercept) / slope,
    width: Math.max(1, number('Window-Width', 255) / Math.abs(slope)),
    pixels: new Typed(buffer),
  };
  return m;
}

function loadPicture(imageId) {
  const promise = fetchPicture(imageId).then((m) => {
    imageMeta.set(imageId, m);
    const voxelManager = utilities.VoxelManager.createImageVoxelManager({
      width: m.columns, height: m.rows, numberOfComponents: 1, scalarData: m.pixels, id: imageId,
    });
    return {
      imageId, minPixelValue: m.min, maxPixelValue: m.max, slope: 1, intercept: 0,
      windowCenter: m.center, windowWidth: m.width, voiLUTFunction: 'LINEAR',
      getPixelData: () => voxelManager.getScalarData(), getCanvas: undefined,
      rows: m.rows, columns: m.columns, height: m.rows, width: m.columns, color: false, rgba: false,
      numberOfComponents: 1, columnPixelSpacing: 1, rowPixelSpacing: 1,
      invert: m.photometric === 'MONOCHROME1', photometricInterpretation: m.photometric,
      sizeInBytes: m.pixels.byteLength, dataType: m.pixels.constructor.name, voxelManager,
    };
  });
  return { promise };
}

function start() {
  if (!started) {
    started = (async () => {
      await coreInit();
      toolsInit();
      imageLoader.registerImageLoader(SCHEME, loadPicture);
      metaData.addProvider(metadataProvider, 10000);
      [WindowLevelTool, PanTool, ZoomTool].forEach((tool) => addTool(tool));
      const group = ToolGroupManager.createToolGroup(TOOL_GROUP_ID);
      group.addTool(WindowLevelTool.toolName);
      group.addTool(PanTool.toolName);
      group.addTool(ZoomTool.toolName);
      bindLeft(group, WindowLevelTool.toolName);
      return { engine: new RenderingEngine(ENGINE_ID), group };
    })();
  }
  return started;
}

const LEFT_TOOLS = { wl: WindowLevelTool.toolName, pan: PanTool.toolName, zoom: ZoomTool.toolName };

function bindLeft(group, leftTool) {
  // Left drag: the chosen tool; middle: pan; right: zoom; wheel: zoom. One binding each.
  const bindings = {
    [WindowLevelTool.toolName]: [],
    [PanTool.toolName]: [{ mouseButton: MouseBindings.Auxiliary }],
    [ZoomTool.toolName]: [{ mouseButton: MouseBindings.Secondary }, { mouseButton: MouseBindings.Wheel }],
  };
  bindings[leftTool].push({ mouseButton: MouseBindings.Primary });
  Object.entries(bindings).forEach(([tool, list]) => {
    group.setToolPassive(tool, { removeAllBindings: true });
    group.setToolActive(tool, { bindings: list });
  });
}

// ---------------------------------------------------------------------------------------------------------
// A viewer: a toolbar, one or two panes (the study, and a prior beside it), the Grad-CAM layer.

let current = null; // the mounted viewer
let paneCounter = 0;

function el(tag, attrs = {}, children = []) {
  const node = document.createElement(tag);
  Object.entries(attrs).forEach(([k, v]) => {
    if (k === 'text') node.textContent = v;
    else node.setAttribute(k, v);
  });
  children.forEach((child) => node.appendChild(child));
  return node;
}

class Pane {
  constructor(viewer, role) {
    this.viewer = viewer;
    this.role = role;
    this.viewportId = `xraylab-${role}-${++paneCounter}`;
    this.element = el('div', { class: 'xv-element', 'data-pane': role });
    this.element.oncontextmenu = (e) => e.preventDefault();
    this.heatCanvas = el('canvas', { class: 'xv-heat', 'aria-hidden': 'true' });
    this.caption = el('div', { class: 'xv-caption' });
    this.readout = el('div', { class: 'xv-readout', 'aria-live': 'off' });
    this.node = el('div', { class: `xv-pane xv-pane-${role}` }, [this.element, this.heatCanvas, this.caption, this.readout]);
    this.enabled = false;
    this.imageId = null;
    this.meta = null;
    this.node.addEventListener('mousedown', () => viewer.setActive(this));
    this.node.addEventListener('wheel', () => viewer.setActive(this), { passive: true });
  }

  viewport() {
    return this.enabled ? this.viewer.engine.getViewport(this.viewportId) : null;
  }

  async show(url, caption) {
    const { engine, group } = await start();
    this.caption.textContent = caption || '';
    if (!this.enabled) {
      engine.enableElement({
        viewportId: this.viewportId, type: Enums.ViewportType.STACK, element: this.element,
        defaultOptions: { background: [0, 0, 0] },
      });
      group.addViewport(this.viewportId, ENGINE_ID);
      this.enabled = true;
      this.element.addEventListener(Enums.Events.IMAGE_RENDERED, () => this.afterRender());
    }
    this.imageId = `${SCHEME}:${url}`;
    const viewport = this.viewport();
    await viewport.setStack([this.imageId], 0);
    this.meta = imageMeta.get(this.imageId);
    this.reset();
    this.node.dataset.loaded = '1';
    this.node.dataset.bits = String(this.meta.bitsStored);
  }

  voiOf(preset) {
    const m = this.meta;
    const full = { lower: m.min, upper: m.max };
    const file = { lower: m.center - m.width / 2, upper: m.center + m.width / 2 };
    const scaled = (factor) => {
      const half = (file.upper - file.lower) * factor / 2;
      const mid = (file.upper + file.lower) / 2;
      return { lower: mid - half, upper: mid + half };
    };
    return { file, full, soft: scaled(1.5), hard: scaled(0.6) }[preset];
  }

  setPreset(preset) {
    const viewport = this.viewport();
    if (!viewport || !this.meta) return;
    viewport.setProperties({ voiRange: this.voiOf(preset) });
    viewport.render();
  }

  invert() {
    const viewport = this.viewport();
    if (!viewport) return;
    viewport.setProperties({ invert: !viewport.getProperties().invert });
    viewport.render();
  }

  fit() {
    const viewport = this.viewport();
    if (!viewport) return;
    viewport.resetCamera();
    viewport.render();
  }

  oneToOne() {
    // With a pixel spacing of 1, parallelScale is half the pane's height in image pixels: one image pixel
    // per CSS pixel when it is half the element's CSS height.
    const viewport = this.viewport();
    if (!viewport) return;
    viewport.setCamera({ parallelScale: this.element.clientHeight / 2 });
    viewport.render();
  }

  reset() {
    const viewport = this.viewport();
    if (!viewport || !this.meta) return;
    viewport.resetCamera();
    viewport.setProperties({ voiRange: this.voiOf('file'), invert: this.meta.photometric === 'MONOCHROME1' });
    viewport.render();
  }

  state() {
    // What the pane shows now (read by the tests as a doctor reads the readout).
    const viewport = this.viewport();
    if (!viewport || !this.meta) return null;
    const { voiRange, invert } = viewport.getProperties();
    const canvas = this.element.querySelector('canvas');
    const onePixel = this.element.clientHeight / 2 / viewport.getCamera().parallelScale;
    return {
      window: voiRange.upper - voiRange.lower, level: (voiRange.upper + voiRange.lower) / 2, invert,
      scale: onePixel, bits: this.meta.bitsStored, rows: this.meta.rows, columns: this.meta.columns,
      canvasWidth: canvas ? canvas.width : 0,
    };
  }

  afterRender() {
    const s = this.state();
    if (s) {
      this.readout.textContent = `W ${Math.round(s.window)} L ${Math.round(s.level)} · ` +
        `${Math.round(s.scale * 100)} % · ${s.columns} x ${s.rows}, ${s.bits} bit${s.invert ? ' · inverted' : ''}`;
    }
    this.viewer.drawHeat(this);
  }

  drawHeat(image, opacity) {
    // The layer covers the whole film (the model sees the whole picture, resized): its corners are the film's.
    const canvas = this.heatCanvas;
    const ratio = window.devicePixelRatio || 1;
    const width = this.element.clientWidth;
    const height = this.element.clientHeight;
    if (canvas.width !== Math.round(width * ratio) || canvas.height !== Math.round(height * ratio)) {
      canvas.width = Math.round(width * ratio);
      canvas.height = Math.round(height * ratio);
      canvas.style.width = `${width}px`;
      canvas.style.height = `${height}px`;
    }
    const context = canvas.getContext('2d');
    context.setTransform(1, 0, 0, 1, 0, 0);
    context.clearRect(0, 0, canvas.width, canvas.height);
    const viewport = this.viewport();
    if (!image || !viewport || !this.meta) return;
    const a = viewport.worldToCanvas([-0.5, -0.5, 0]);
    const b = viewport.worldToCanvas([this.meta.columns - 0.5, this.meta.rows - 0.5, 0]);
    context.setTransform(ratio, 0, 0, ratio, 0, 0);
    context.globalAlpha = opacity;
    context.imageSmoothingEnabled = true;
    context.drawImage(image, Math.min(a[0], b[0]), Math.min(a[1], b[1]), Math.abs(b[0] - a[0]), Math.abs(b[1] - a[1]));
  }

  destroy() {
    if (this.enabled && this.viewer.engine) {
      try {
        const group = ToolGroupManager.getToolGroup(TOOL_GROUP_ID);
        if (group) group.removeViewports(ENGINE_ID, this.viewportId);
        this.viewer.engine.disableElement(this.viewportId);
      } catch (e) { /* already gone with its element */ }
    }
    this.enabled = false;
    if (this.imageId) { // a film's samples (up to 20 MB) are not kept once no pane shows it
      imageMeta.delete(this.imageId);
      try { cache.removeImageLoadObject(this.imageId, { force: true }); } catch (e) { /* not cached */ }
      this.imageId = null;
    }
  }
}

function viewerKey(root) {
  return `${root.dataset.study}|${root.dataset.pixels}|${root.dataset.heat}`;
}

class Viewer {
  constructor(root) {
    this.root = root;
    this.key = viewerKey(root);
    this.engine = null;
    this.heat = { on: false, opacity: 0.45, image: null, loading: null };
    this.panes = {};
    this.active = null;
    this.build();
  }

  build() {
    const root = this.root;
    root.replaceChildren();
    const button = (action, text, title) => el('button', {
      type: 'button', class: 'xv-btn', 'data-action': action, title, text,
    });
    const presets = el('span', { class: 'xv-group', role: 'group', 'aria-label': 'Window' }, [
      el('span', { class: 'xv-label', text: 'Window' }),
      button('preset-file', 'File', "The file's own window (1)"),
      button('preset-full', 'Full', 'The full stored range (2)'),
      button('preset-soft', 'Soft', 'Wider window, less contrast (3)'),
      button('preset-hard', 'Hard', 'Narrower window, more contrast (4)'),
    ]);
    const mode = el('span', { class: 'xv-group', role: 'group', 'aria-label': 'Left drag' }, [
      el('span', { class: 'xv-label', text: 'Drag' }),
      button('left-wl', 'W/L', 'Left drag changes window/level'),
      button('left-pan', 'Pan', 'Left drag pans'),
      button('left-zoom', 'Zoom', 'Left drag zooms'),
    ]);
    const view = el('span', { class: 'xv-group' }, [
      button('fit', 'Fit', 'Fit the film to the panel (F)'),
      button('one', '1:1', 'One image pixel per screen pixel (O)'),
      button('invert', 'Invert', 'Invert grey levels (I)'),
      button('reset', 'Reset', 'Reset window, zoom and pan (R)'),
    ]);
    this.heatButton = button('heat', 'Grad-CAM', 'Show or hide where the model looked (H)');
    this.heatButton.setAttribute('aria-pressed', 'false');
    this.opacity = el('input', {
      type: 'range', min: '0', max: '100', step: '5', value: String(this.heat.opacity * 100),
      class: 'xv-opacity', 'aria-label': 'Grad-CAM opacity', title: 'Grad-CAM opacity ([ and ])',
    });
    this.opacity.addEventListener('input', () => this.setOpacity(Number(this.opacity.value) / 100));
    const scale = el('span', { class: 'xv-scale', title: root.dataset.scaleText || '' }, [
      el('span', { class: 'xv-scale-end', text: 'low' }),
      el('span', { class: 'xv-scale-bar', style: `background:${root.dataset.scaleCss || 'linear-gradient(90deg,#000,#fff)'}` }),
      el('span', { class: 'xv-scale-end', text: 'high' }),
    ]);
    const heat = el('span', { class: 'xv-group', role: 'group', 'aria-label': 'Grad-CAM' },
      root.dataset.heat ? [this.heatButton, this.opacity, scale] : [el('span', { class: 'xv-label', text: 'No Grad-CAM (no prediction)' })]);
    const keys = button('keys', 'Keys', 'Keyboard shortcuts (?)');
    this.toolbar = el('div', { class: 'xv-toolbar' }, [presets, mode, view, heat, keys]);
    this.help = el('div', { class: 'xv-help', hidden: '' }, [el('table', {}, KEYS.map(([k, what]) => el('tr', {}, [
      el('th', { text: k }), el('td', { text: what })])))]);
    this.panesNode = el('div', { class: 'xv-panes' });
    this.status = el('div', { class: 'xv-status', role: 'status' });
    this.legendText = el('div', { class: 'xv-legend', text: root.dataset.scaleText || '' });
    this.legendText.hidden = true;
    root.append(this.toolbar, this.help, this.panesNode, this.legendText, this.status);
    this.toolbar.addEventListener('click', (event) => {
      const target = event.target.closest('[data-action]');
      if (target) this.act(target.dataset.action);
    });
    this.setLeft('wl');
  }

  async mount() {
    const { engine } = await start();
    if (this.destroyed) return; // another study opened meanwhile (J / K pressed fast)
    this.engine = engine;
    const main = this.addPane('main');
    this.active = main;
    this.resizeObserver = new ResizeObserver(() => this.resize());
    this.resizeObserver.observe(this.panesNode);
    await this.load(main, this.root.dataset.pixels, this.root.dataset.caption);
    if (this.destroyed) main.destroy(); // let go of what arrived after the viewer was let go of
  }

  addPane(role) {
    const pane = new Pane(this, role);
    this.panes[role] = pane;
    if (role === 'prior') {
      const close = el('button', { type: 'button', class: 'xv-btn xv-close', text: 'Close prior', 'data-action': 'close-prior' });
      close.addEventListener('click', () => this.closePrior());
      pane.node.appendChild(close);
    }
    this.panesNode.appendChild(pane.node);
    this.panesNode.dataset.count = String(Object.keys(this.panes).length);
    return pane;
  }

  async load(pane, url, caption) {
    this.status.textContent = 'Loading the film…';
    this.root.dataset.state = 'loading';
    try {
      await pane.show(url, caption);
      this.status.textContent = '';
      this.root.dataset.state = 'ready';
      if (this.heat.on) this.drawHeat(pane);
    } catch (error) {
      this.status.textContent = `The film cannot be shown: ${error.message}`;
      this.root.dataset.state = 'error';
    }
  }

  async openPrior(url, caption) {
    const pane = this.panes.prior || this.addPane('prior');
    this.resize();
    await this.load(pane, url, caption);
    this.refit();
  }

  refit() {
    // The panes changed size (a prior opened or closed): each film fitted to its pane again.
    this.resize();
    Object.values(this.panes).forEach((pane) => pane.fit());
  }

  closePrior() {
    const pane = this.panes.prior;
    if (!pane) return;
    pane.destroy();
    pane.node.remove();
    delete this.panes.prior;
    if (this.active === pane) this.active = this.panes.main;
    this.panesNode.dataset.count = String(Object.keys(this.panes).length);
    this.refit();
  }

  resize() {
    if (this.engine) this.engine.resize(true, true);
  }

  setActive(pane) {
    this.active = pane;
    Object.values(this.panes).forEach((p) => p.node.classList.toggle('xv-active', p === pane));
  }

  setLeft(which) {
    this.root.dataset.left = which;
    this.toolbar.querySelectorAll('[data-action^="left-"]').forEach((b) => {
      b.setAttribute('aria-pressed', String(b.dataset.action === `left-${which}`));
    });
    if (started) started.then(({ group }) => bindLeft(group, LEFT_TOOLS[which]));
  }

  act(action) {
    const pane = this.active || this.panes.main;
    if (action.startsWith('preset-')) pane?.setPreset(action.slice(7));
    else if (action.startsWith('left-')) this.setLeft(action.slice(5));
    else if (action === 'fit') pane?.fit();
    else if (action === 'one') pane?.oneToOne();
    else if (action === 'invert') pane?.invert();
    else if (action === 'reset') pane?.reset();
    else if (action === 'heat') this.toggleHeat();
    else if (action === 'keys') this.help.hidden = !this.help.hidden;
  }

  async toggleHeat() {
    if (!this.root.dataset.heat) return;
    this.heat.on = !this.heat.on;
    this.heatButton.setAttribute('aria-pressed', String(this.heat.on));
    this.legendText.hidden = !this.heat.on;
    if (this.heat.on && !this.heat.image) {
      this.status.textContent = 'Loading the Grad-CAM layer…';
      try {
        this.heat.image = await this.loadHeat(this.root.dataset.heat);
        if (this.destroyed) { this.heat.image.close(); this.heat.image = null; return; }
        this.status.textContent = '';
      } catch (error) {
        this.status.textContent = `The Grad-CAM layer cannot be shown: ${error.message}`;
        this.heat.on = false;
        this.heatButton.setAttribute('aria-pressed', 'false');
      }
    }
    this.root.dataset.heatOn = this.heat.on ? '1' : '0';
    this.drawHeat(this.panes.main);
  }

  async loadHeat(url) {
    const started_at = performance.now();
    const response = await fetchOk(url);
    const bitmap = await createImageBitmap(await response.blob());
    this.root.dataset.heatMs = String(Math.round(performance.now() - started_at));
    return bitmap;
  }

  setOpacity(value) {
    this.heat.opacity = Math.min(1, Math.max(0, value));
    this.opacity.value = String(Math.round(this.heat.opacity * 100));
    this.drawHeat(this.panes.main);
  }

  drawHeat(pane) {
    // The map belongs to the study scored, so only the study's own pane carries it.
    if (!pane || pane.role !== 'main') return;
    pane.drawHeat(this.heat.on ? this.heat.image : null, this.heat.opacity);
  }

  destroy() {
    this.destroyed = true;
    if (this.resizeObserver) this.resizeObserver.disconnect();
    Object.values(this.panes).forEach((pane) => pane.destroy());
    this.panes = {};
    if (this.heat.image) this.heat.image.close();
    this.heat.image = null;
  }
}

function mountAll() {
  // Gradio may keep the panel's element and morph its attributes and children (another study, or the same one
  // drawn again): the viewer is mounted anew whenever the element, its study or its own toolbar is not the one
  // it mounted.
  const root = document.querySelector('.xv-root[data-pixels]');
  if (current && (!root || current.root !== root || !root.isConnected || current.key !== viewerKey(root) ||
      !root.contains(current.toolbar))) {
    current.destroy();
    current = null;
  }
  if (root && !current) {
    current = new Viewer(root);
    window.xraylabViewer = current;
    current.mount();
  }
}

// ---------------------------------------------------------------------------------------------------------
// The page: mount viewers as Gradio shows them, the worklist's rows and headers, the keyboard, the note counter.

function typing(target) {
  return target && (target.isContentEditable || ['INPUT', 'TEXTAREA', 'SELECT'].includes(target.tagName)) &&
    !(target.tagName === 'INPUT' && ['radio', 'checkbox', 'range', 'button'].includes(target.type));
}

// A command to the app's server: the value into a hidden text box, then its hidden button pressed (the box's
// value reaches the server with the click). A counter keeps two equal commands apart (opening the same row
// twice); a choice (the hospital list) goes as it is, since the server keeps it as the filter's value.
let commandCount = 0;
function send(name, value, { counted = true } = {}) {
  const box = document.querySelector(`#${name} textarea, #${name} input`);
  const go = document.querySelector(`#${name}-go`);
  if (!box || !go) return;
  box.value = counted ? `${value}|${++commandCount}` : value;
  box.dispatchEvent(new Event('input', { bubbles: true }));
  setTimeout(() => go.click(), 30);
}

function rows() {
  return Array.from(document.querySelectorAll('#worklist-table tbody tr[data-study]'));
}

function openRow(row) {
  if (row) send('open-study', row.dataset.study);
}

function moveInWorklist(step) {
  const all = rows();
  if (!all.length) return;
  const open = all.findIndex((r) => r.classList.contains('open'));
  const next = all[Math.min(all.length - 1, Math.max(0, (open < 0 ? -1 : open) + step))];
  openRow(next);
}

function chooseVerdict(label) {
  const input = document.querySelector(`#verdict-choice input[value="${label}"]`);
  if (input) input.click();
}

function clickById(id) {
  const button = document.getElementById(id);
  if (button && !button.disabled) button.click();
}

function onKey(event) {
  const target = event.target;
  if (target && target.closest && target.closest('#verdict-notes') && target.tagName === 'TEXTAREA') {
    if (event.key === 'Enter' && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      clickById('record-next');
    } else if (event.key === 'Escape') {
      target.blur();
    }
    return;
  }
  if (typing(target) || event.altKey || event.ctrlKey || event.metaKey) return;
  const row = target && target.closest ? target.closest('#worklist-table tbody tr[data-study]') : null;
  if (row) {
    const all = rows();
    const index = all.indexOf(row);
    if (event.key === 'ArrowDown' || event.key === 'ArrowUp') {
      event.preventDefault();
      const next = all[index + (event.key === 'ArrowDown' ? 1 : -1)];
      if (next) next.focus();
      return;
    }
    if (event.key === 'Enter' || event.key === ' ') {
      event.preventDefault();
      openRow(row);
      return;
    }
  }
  // The reading keys act only while the Reading tab is on screen: a verdict is never given from another tab.
  const panel = document.getElementById('reading-panel');
  const reading = !!panel && panel.offsetParent !== null && !!document.querySelector('#study-details h3[data-study]');
  const key = event.key;
  const viewer = current;
  const actions = {
    '?': () => viewer && viewer.act('keys'),
    w: () => clickById('to-worklist'),
    j: () => moveInWorklist(1),
    k: () => moveInWorklist(-1),
  };
  const readingActions = {
    p: () => chooseVerdict('Pneumonia'),
    n: () => chooseVerdict('Normal'),
    d: () => chooseVerdict('Not diagnostic'),
    Enter: () => clickById(event.shiftKey ? 'record-verdict' : 'record-next'),
    1: () => viewer && viewer.act('preset-file'),
    2: () => viewer && viewer.act('preset-full'),
    3: () => viewer && viewer.act('preset-soft'),
    4: () => viewer && viewer.act('preset-hard'),
    i: () => viewer && viewer.act('invert'),
    f: () => viewer && viewer.act('fit'),
    o: () => viewer && viewer.act('one'),
    r: () => viewer && viewer.act('reset'),
    h: () => viewer && viewer.act('heat'),
    '[': () => viewer && viewer.setOpacity(viewer.heat.opacity - 0.1),
    ']': () => viewer && viewer.setOpacity(viewer.heat.opacity + 0.1),
  };
  const name = key.length === 1 ? key.toLowerCase() : key;
  const action = actions[name] || (reading && readingActions[name]);
  if (action && !(target && target.tagName === 'BUTTON' && key === 'Enter')) {
    event.preventDefault();
    action();
  }
}

function onClick(event) {
  const target = event.target;
  if (!target.closest) return;
  const sort = target.closest('#worklist-table th[data-sort] button');
  if (sort) {
    send('sort-by', sort.closest('th').dataset.sort);
    return;
  }
  const prior = target.closest('[data-prior-pixels]');
  if (prior && current) {
    event.preventDefault();
    current.openPrior(prior.dataset.priorPixels, prior.dataset.priorCaption || '');
    return;
  }
  const row = target.closest('#worklist-table tbody tr[data-study]');
  if (row) openRow(row);
}

function updateCounter() {
  const box = document.querySelector('#verdict-notes textarea');
  const counter = document.getElementById('notes-counter');
  if (!box || !counter) return;
  const limit = Number(counter.dataset.limit || 0);
  const length = box.value.length;
  const text = `${length} / ${limit} characters`;
  if (counter.textContent !== text) counter.textContent = text; // only a change: the observer sees every write
  counter.classList.toggle('over', limit > 0 && length > limit);
}

function markOpenRow() {
  // The open study's row keeps its highlight whatever redraws the worklist (a save, a refresh, another page).
  const heading = document.querySelector('#study-details h3[data-study]');
  const open = heading ? heading.dataset.study : null;
  rows().forEach((r) => {
    const isOpen = r.dataset.study === open;
    if (r.classList.contains('open') !== isOpen) r.classList.toggle('open', isOpen);
    if (isOpen && r.getAttribute('aria-current') !== 'true') r.setAttribute('aria-current', 'true');
    if (!isOpen && r.hasAttribute('aria-current')) r.removeAttribute('aria-current');
  });
}

let pending = false;
function onPageChanged() {
  // Gradio redraws parts of the page often: the work is done once per frame, and writes nothing unchanged (an
  // unconditional write would be seen by the observer again, without end).
  if (pending) return;
  pending = true;
  requestAnimationFrame(() => {
    pending = false;
    mountAll();
    updateCounter();
    markOpenRow();
  });
}

function boot() {
  document.addEventListener('keydown', onKey);
  document.addEventListener('click', onClick);
  document.addEventListener('change', (event) => {
    if (event.target.id === 'hospital-select') send('hospital-value', event.target.value, { counted: false });
  });
  document.addEventListener('input', (event) => {
    if (event.target.closest && event.target.closest('#verdict-notes')) updateCounter();
  });
  new MutationObserver(onPageChanged).observe(document.body, { childList: true, subtree: true });
  onPageChanged();
}

if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', boot);
else boot();
