//! The text-layout check shared by the figures' and the report page's tests: every text
//! box, as its renderer laid it out, inside the chart, clear of every other box, and
//! printed at 6 pt or more.

/// A text element as drawn: its string, the four corners of its box in chart pixels, and
/// its font size in chart pixels after every transform.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct TextBox {
    pub text: String,
    pub corners: [(f32, f32); 4],
    pub size: f32,
}

/// How far a box may cross the chart's edge, in pixels: rounding, not layout.
const TOL: f32 = 0.5;

/// The least distance between two text boxes, in pixels (a third of a point in print):
/// labels that touch read as one.
const GAP: f32 = 0.5;

/// Whether two convex quadrilaterals come closer than `gap` pixels along every axis of
/// either (separating axes: one axis they are `gap` apart on keeps them apart).
fn closer_than(a: &[(f32, f32); 4], b: &[(f32, f32); 4], gap: f32) -> bool {
    for quad in [a, b] {
        for i in 0..4 {
            let (p, q) = (quad[i], quad[(i + 1) % 4]);
            let (nx, ny) = (q.1 - p.1, p.0 - q.0);
            let len = (nx * nx + ny * ny).sqrt();
            if len == 0.0 {
                continue;
            }
            let proj = |c: &[(f32, f32); 4]| {
                c.iter()
                    .map(|v| (v.0 * nx + v.1 * ny) / len)
                    .fold((f32::MAX, f32::MIN), |(lo, hi), x| (lo.min(x), hi.max(x)))
            };
            let ((a0, a1), (b0, b1)) = (proj(a), proj(b));
            if a0.max(b0) - a1.min(b1) >= gap {
                return false;
            }
        }
    }
    true
}

/// What is wrong with the text of chart `name`, `w` x `h` pixels: boxes cut by its edge,
/// colliding with (or touching) another, both strings named, or smaller than `min_px`.
pub fn problems(name: &str, w: f32, h: f32, boxes: &[TextBox], min_px: f32) -> Vec<String> {
    let mut out = Vec::new();
    for b in boxes {
        if b.corners
            .iter()
            .any(|&(x, y)| x < -TOL || y < -TOL || x > w + TOL || y > h + TOL)
        {
            out.push(format!(
                "{name}: {:?} is cut by the edge ({:?} in {w}x{h})",
                b.text, b.corners
            ));
        }
        if b.size < min_px - 0.01 {
            out.push(format!(
                "{name}: {:?} prints at {:.1} px, below {min_px} px",
                b.text, b.size
            ));
        }
    }
    for (i, a) in boxes.iter().enumerate() {
        for b in &boxes[i + 1..] {
            if closer_than(&a.corners, &b.corners, GAP) {
                out.push(format!("{name}: {:?} collides with {:?}", a.text, b.text));
            }
        }
    }
    out
}
