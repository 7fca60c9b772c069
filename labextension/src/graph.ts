// The snapshot tree drawn as a commit graph: one row per snapshot in tree order
// (a parent above its children), each snapshot a dot on a lane, a line to its parent.
// A first child goes on in its parent's lane; later children (branches made by
// restores) take the leftmost lane free from their parent's row down to their own.

export interface IGraphNode {
  id: string;
  parent: string | null;
}

export interface IGraphRow {
  id: string;
  lane: number;
  /** The row of the parent, or -1 for a root. */
  parentRow: number;
  parentLane: number;
}

export interface IGraphLayout {
  rows: IGraphRow[];
  lanes: number;
}

/** Lanes for nodes given in tree order (every parent before its children). */
export function layout(nodes: IGraphNode[]): IGraphLayout {
  const rowOf = new Map<string, number>();
  const laneOf = new Map<string, number>();
  const hasChild = new Set<string>();
  // used[lane] = row intervals [from, to] where the lane is taken
  const used: [number, number][][] = [];
  const free = (lane: number, from: number, to: number) =>
    (used[lane] ?? []).every(([a, b]) => b < from || a > to);
  const take = (lane: number, from: number, to: number) => {
    (used[lane] = used[lane] ?? []).push([from, to]);
  };
  const rows: IGraphRow[] = nodes.map((node, row) => {
    const parentRow = node.parent !== null ? (rowOf.get(node.parent) ?? -1) : -1;
    let lane: number;
    if (parentRow >= 0 && !hasChild.has(node.parent as string)) {
      lane = laneOf.get(node.parent as string) as number; // goes on in the parent's lane
      take(lane, parentRow, row);
    } else {
      const from = parentRow >= 0 ? parentRow + 1 : row;
      lane = 0;
      while (!free(lane, from, row)) {
        lane++;
      }
      take(lane, from, row);
    }
    if (parentRow >= 0) {
      hasChild.add(node.parent as string);
    }
    rowOf.set(node.id, row);
    laneOf.set(node.id, lane);
    const parentLane = parentRow >= 0 ? (laneOf.get(node.parent as string) as number) : lane;
    return { id: node.id, lane, parentRow, parentLane };
  });
  return { rows, lanes: Math.max(1, used.length) };
}

export const LANE_WIDTH = 12;
const DOT = 4.5;
const SVG_NS = 'http://www.w3.org/2000/svg';

export function laneX(lane: number): number {
  return LANE_WIDTH / 2 + 2 + lane * LANE_WIDTH;
}

/** The graph as one SVG for rows of `rowHeight` pixels; `live` gets a ringed dot. */
export function render(g: IGraphLayout, rowHeight: number, live: string | null): SVGSVGElement {
  const svg = document.createElementNS(SVG_NS, 'svg');
  const width = laneX(g.lanes - 1) + LANE_WIDTH / 2 + 2;
  const height = g.rows.length * rowHeight;
  svg.setAttribute('class', 'jp-chkpt-graph');
  svg.setAttribute('width', String(width));
  svg.setAttribute('height', String(height));
  svg.setAttribute('viewBox', `0 0 ${width} ${height}`);
  svg.setAttribute('aria-hidden', 'true');
  const y = (row: number) => row * rowHeight + rowHeight / 2;
  const element = (name: string, attrs: Record<string, string | number>) => {
    const e = document.createElementNS(SVG_NS, name);
    for (const [k, v] of Object.entries(attrs)) {
      e.setAttribute(k, String(v));
    }
    svg.appendChild(e);
    return e;
  };
  g.rows.forEach((r, row) => {
    if (r.parentRow < 0) {
      return;
    }
    const x0 = laneX(r.parentLane);
    const x1 = laneX(r.lane);
    const y0 = y(r.parentRow);
    let d: string;
    if (x0 === x1) {
      d = `M${x0},${y0} V${y(row)}`;
    } else {
      // out of the parent's dot, bend into the branch's lane within a row, then down
      const bend = y0 + rowHeight;
      d = `M${x0},${y0} C${x0},${bend - rowHeight / 3} ${x1},${y0 + rowHeight / 3} ${x1},${bend} V${y(row)}`;
    }
    element('path', { d, class: `jp-chkpt-edge jp-chkpt-lane-${r.lane % 4}` });
  });
  g.rows.forEach((r, row) => {
    const isLive = r.id === live;
    element('circle', {
      cx: laneX(r.lane),
      cy: y(row),
      r: isLive ? DOT + 1 : DOT,
      class: `jp-chkpt-dot jp-chkpt-lane-${r.lane % 4}${isLive ? ' jp-chkpt-dot-live' : ''}`
    });
  });
  return svg;
}
